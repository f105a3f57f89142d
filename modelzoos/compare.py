"""``compare``: are two zoos of one spec the same population? Their distributions side by side, with verdicts.

Training is chaotic: another engine, device, activation layout or float rounding sends single models onto
other trajectories, so two faithful zoos of one spec agree as populations, not model by model. ``compare``
reads two sides and tests, epoch by epoch, whether their distributions agree (docs/compare.md).

Sides: ``ZooDirSide(path)``, a zoo directory read through ``export.ZooDir``, or ``ConfigSide(repo, config)``,
a published config of a repository folder or Hub id read through ``repository.config_info`` and a streamed
``loading.load_zoo``. Each is read into a ``Population``: one row per model state with its hyperparameters,
metrics, ``nonfinite`` and, for every parameter tensor, the mean, standard deviation and L2 norm of its
weights (columns ``<tensor>.mean`` / ``.std`` / ``.norm``). Weights are read in batches of at most
``BATCH_BYTES`` and dropped once summarised, so memory does not grow with the zoo's weights.

Tests, one per scope × quantity × compared epoch; the scopes are all models, then each value of each grid
axis that varies (``activation=sigmoid``, ``lr=0.001``, ...; values present on both sides):

=============  ======================================  =======================  ===============================
statistic      quantity                                test (p-value)           effect and its threshold
=============  ======================================  =======================  ===============================
distribution   each metric, each weight statistic       two-sample KS            KS distance D ≥ 0.1
nonfinite      fraction of models with NaN/inf weights  Fisher's exact test      |fraction B − fraction A| ≥ 0.02
paired         each metric, models in both sides with   Wilcoxon signed-rank     |median(B − A)| / robust spread
               the same id and hyperparameters                                  ≥ 0.1
=============  ======================================  =======================  ===============================

Distributions exclude non-finite states and missing values (a zoo without a validation split has no val_*
values). The robust spread is the interquartile range of both sides' values ÷ 1.349 (the standard deviation of
a normal distribution). Each distribution test also reports the quantiles ``QUANTILES`` of both sides and the
difference of medians (B − A) with a percentile-bootstrap interval; each paired test the Pearson and Spearman
correlations and the quantiles of the per-model differences.

Verdicts: Holm's step-down correction over all m tests of the comparison (family-wise error ≤ ``alpha``).
A test **differs** when its adjusted p-value is below ``alpha`` and its effect reaches the threshold; it has
**too few models to tell** when a side has fewer than ``MIN_MODELS`` values, or when even a complete separation
of the two sides (the smallest p-value its sample sizes allow) would not pass ``alpha / m``; otherwise it is
the **same**. The threshold keeps a real but negligible difference (large zoos detect tiny ones) from
counting as a difference; ``resolution`` says which KS distance a test would detect at ``alpha / m``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from modelzoos.architectures import Layout
from modelzoos.baselines.data import rows_per_batch
from modelzoos.baselines.features import stat_entries
from modelzoos.card import markdown_table
from modelzoos.catalogue import GRID_AXES, Zoo
from modelzoos.export import HYPERPARAMETERS, ZooDir, differences
from modelzoos.files import atomic_write, write_json, write_text
from modelzoos.loading import WEIGHTS, config_info, load_zoo
from modelzoos.repository import SPLITS
from modelzoos.training import METRICS, numerics_setting

ALPHA = 0.05  # family-wise error rate over all tests of one comparison (Holm)
MIN_MODELS = 5  # fewer values on a side: too few models to tell
THRESHOLDS = {"distribution": 0.1, "nonfinite": 0.02, "paired": 0.1}  # effects below these are "same"
EFFECTS = {"distribution": "KS distance D", "nonfinite": "|Δ fraction|", "paired": "|median B − A| / spread"}
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
BOOTSTRAP = 1000  # resamples of the median-difference interval
CONFIDENCE = 0.95
WEIGHT_STATISTICS = ("mean", "std", "norm")
BATCH_BYTES = 64 << 20  # weights read at a time
SAME, TOO_FEW, DIFFERS = "same", "too few models to tell", "differs"
# spec fields that describe a zoo without changing how it is trained
DESCRIPTIVE = ("name", "description", "config", "source", "notes", "paper_counts_epoch0")
COLUMNS = ("model_id", "epoch", *HYPERPARAMETERS, *METRICS, "nonfinite")  # read from every side
FIGURE_METRICS = ("test_acc", "test_loss")  # learning-curve panels; the first is also histogrammed


# ---------------------------------------------------------------------------------------------------------
# Sides
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Population:
    """One side of a comparison, read: ``frame`` holds one row per model state (``COLUMNS`` and, unless read
    without weights, ``<tensor>.<mean|std|norm>`` per parameter tensor, float64); ``source`` says where it
    comes from (JSON)."""

    label: str
    source: dict
    zoo: Zoo
    data_sha256: str | None
    frame: pd.DataFrame


def weight_statistics(weights: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """float32 ``[B, D]`` → ``{"<tensor>.mean" | ".std" | ".norm": float64 [B]}`` for every parameter tensor
    (layout order): the mean, the standard deviation (ddof 0) and the L2 norm of its entries."""
    out = {}
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite states give NaN statistics (never compared)
        for entry in stat_entries(layout):
            part = weights[:, entry.offset : entry.offset + entry.numel].astype(np.float64)
            out[f"{entry.name}.mean"] = part.mean(1)
            out[f"{entry.name}.std"] = part.std(1)
            out[f"{entry.name}.norm"] = np.linalg.norm(part, axis=1)
    return out


def _selected(epochs: Sequence[int] | None, available: Sequence[int]) -> list[int]:
    return sorted(set(available) if epochs is None else set(available) & set(epochs))


@dataclass(frozen=True)
class ZooDirSide:
    """A finished zoo directory (``modelzoos generate`` / ``twins``)."""

    path: str | Path

    def spec(self) -> Zoo:
        return ZooDir(self.path).zoo

    def read(self, label: str, epochs: Sequence[int] | None, weights: bool, progress: bool) -> Population:
        zoo = ZooDir(self.path)
        meta = zoo.metadata
        positions = np.flatnonzero(meta.epoch.isin(_selected(epochs, meta.epoch.unique())).to_numpy())
        frame = meta.iloc[positions][list(COLUMNS)].reset_index(drop=True)
        if weights:  # file by file, in batches; rows land at their place in frame
            order = np.lexsort((meta.weights_row.to_numpy()[positions], meta.weights_file.to_numpy()[positions]))
            step = rows_per_batch(zoo.layout.size, BATCH_BYTES)
            columns: dict[str, np.ndarray] = {}
            with tqdm(total=len(order), desc=f"{label}: {zoo.zoo.name}", unit="state", disable=not progress) as bar:
                for start in range(0, len(order), step):
                    at = order[start : start + step]
                    batch = np.empty((len(at), zoo.layout.size), np.float32)
                    zoo.read_rows(positions[at], batch)
                    for name, values in weight_statistics(batch, zoo.layout).items():
                        columns.setdefault(name, np.full(len(frame), np.nan))[at] = values
                    bar.update(len(at))
            frame = pd.concat([frame, pd.DataFrame(columns)], axis=1)
        info = zoo.info
        source = {"kind": "zoo directory", "path": str(self.path), "zoo": zoo.zoo.name, "engine": info["run"]["engine"],
                  "chunk_size": info["run"]["chunk_size"], "device": info.get("device"),
                  "numerics": info.get("numerics"), "versions": info.get("versions")}
        return Population(label, source, zoo.zoo, info["data"].get("sha256"), frame)


@dataclass(frozen=True)
class ConfigSide:
    """A config of a dataset repository: a folder written by ``modelzoos build`` or a Hub id ``ORG/NAME``.
    Its splits are read together (the whole zoo), streamed from the Parquet files."""

    repo: str | Path
    config: str

    def spec(self) -> Zoo:
        return config_info(self.repo, self.config).zoo

    def _batches(self, split: str, epochs: list[int], weights: bool, size: int) -> Iterator[Any]:
        columns = [*COLUMNS, WEIGHTS] if weights else list(COLUMNS)
        ds = load_zoo(self.repo, self.config, split, streaming=True, columns=columns,
                      filters=[("epoch", "in", epochs)])
        return ds.with_format("arrow").iter(batch_size=size)

    def read(self, label: str, epochs: Sequence[int] | None, weights: bool, progress: bool) -> Population:
        info = config_info(self.repo, self.config)
        selected = _selected(epochs, info.epochs)
        step = rows_per_batch(info.layout.size, BATCH_BYTES)
        parts = []
        with tqdm(total=info.num_models * len(selected), desc=f"{label}: {self.config}", unit="state",
                  disable=not progress) as bar:
            for split in SPLITS if selected else ():
                for table in self._batches(split, selected, weights, step):
                    part = table.select(list(COLUMNS)).to_pandas()
                    if weights:
                        vectors = table.column(WEIGHTS).combine_chunks()
                        matrix = vectors.flatten().to_numpy(zero_copy_only=False).reshape(len(vectors), -1)
                        part = pd.concat([part, pd.DataFrame(weight_statistics(matrix, info.layout))], axis=1)
                    parts.append(part)
                    bar.update(len(part))
        frame = (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(COLUMNS)))
        frame = frame.sort_values(["model_id", "epoch"], ignore_index=True)
        source = {"kind": "published config", "repo": str(self.repo), "config": self.config, "zoo": info.zoo.name,
                  "splits": {s: len(ids) for s, ids in info.splits.items()}}
        return Population(label, source, info.zoo, info.data.get("sha256"), frame)


Side = ZooDirSide | ConfigSide


# ---------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------


def spec_differences(a: Zoo, b: Zoo) -> list[dict]:
    """``[{"field": dotted path, "a": value, "b": value}]`` for every spec field (``DESCRIPTIVE`` ones aside)
    whose values differ."""
    da, db = ({k: v for k, v in z.to_dict().items() if k not in DESCRIPTIVE} for z in (a, b))

    def get(d: dict, path: str) -> Any:
        for key in path.split("."):
            d = d.get(key) if isinstance(d, dict) else None
        return d

    return [{"field": f, "a": get(da, f), "b": get(db, f)} for f in differences(da, db)]


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (reject where adjusted < alpha: family-wise error ≤ alpha)."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]), 1.0)
    out = np.empty_like(p)
    out[order] = adjusted
    return out


def _value_name(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def scopes(a: pd.DataFrame, b: pd.DataFrame) -> list[tuple[str, pd.Series, pd.Series]]:
    """``(name, rows of a, rows of b)``: all models, then per value (present on both sides) of every grid axis
    whose values vary across the two sides."""
    out = [("all", pd.Series(True, a.index), pd.Series(True, b.index))]
    for axis in GRID_AXES:
        if len(set(a[axis]) | set(b[axis])) > 1:
            both = sorted(set(a[axis]) & set(b[axis]))
            out += [(f"{axis}={_value_name(v)}", a[axis] == v, b[axis] == v) for v in both]
    return out


def _finite(values: pd.Series) -> np.ndarray:
    x = values.to_numpy(dtype=np.float64)
    return x[np.isfinite(x)]


def _median_interval(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, resamples: int) -> list[float]:
    """Percentile-bootstrap ``CONFIDENCE`` interval of median(y) − median(x)."""
    mx = np.median(x[rng.integers(0, len(x), (resamples, len(x)))], axis=1)
    my = np.median(y[rng.integers(0, len(y), (resamples, len(y)))], axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    return np.percentile(my - mx, [tail, 100 - tail]).tolist()


def distribution_test(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, resamples: int) -> dict:
    """Two-sample KS test of the values of A (``x``) and B (``y``) with their quantiles and median difference."""
    out = {"statistic": "distribution", "n_a": len(x), "n_b": len(y), "effect": math.nan, "p": 1.0, "p_floor": 1.0,
           "quantiles_a": np.quantile(x, QUANTILES).tolist() if len(x) else None,
           "quantiles_b": np.quantile(y, QUANTILES).tolist() if len(y) else None,
           "median_difference": math.nan, "median_interval": None}
    if len(x) and len(y):
        ks = stats.ks_2samp(x, y)
        out |= {"effect": float(ks.statistic), "p": float(ks.pvalue),
                "p_floor": float(stats.ks_2samp(np.zeros(len(x)), np.ones(len(y))).pvalue),
                "median_difference": float(np.median(y) - np.median(x)),
                "median_interval": _median_interval(x, y, rng, resamples)}
    return out


def nonfinite_test(a: pd.Series, b: pd.Series) -> dict:
    """Fisher's exact test of the fractions of non-finite states."""
    ka, kb, na, nb = int(a.sum()), int(b.sum()), len(a), len(b)
    out = {"statistic": "nonfinite", "n_a": na, "n_b": nb, "fraction_a": ka / na if na else math.nan,
           "fraction_b": kb / nb if nb else math.nan, "effect": math.nan, "p": 1.0, "p_floor": 1.0}
    if na and nb:
        out |= {"effect": abs(kb / nb - ka / na), "p": float(stats.fisher_exact([[ka, na - ka], [kb, nb - kb]]).pvalue),
                "p_floor": float(stats.fisher_exact([[na, 0], [0, nb]]).pvalue)}
    return out


def paired_test(x: np.ndarray, y: np.ndarray) -> dict:
    """Wilcoxon signed-rank test of B − A over models present in both (``x[i]``, ``y[i]``: one model)."""
    d = y - x
    n = len(d)
    out = {"statistic": "paired", "n_a": n, "n_b": n, "effect": math.nan, "p": 1.0, "p_floor": 2.0 ** (1 - n),
           "pearson": math.nan, "spearman": math.nan, "mean_difference": float(d.mean()) if n else math.nan,
           "difference_quantiles": np.quantile(d, QUANTILES).tolist() if n else None}
    if not n:
        return out
    q75, q25 = np.percentile(np.concatenate([x, y]), [75, 25])
    spread, median = (q75 - q25) / 1.349, float(np.median(d))
    out["effect"] = abs(median) / spread if spread > 0 else (math.inf if median else 0.0)
    if np.any(d != 0):
        out["p"] = float(stats.wilcoxon(d).pvalue)
    if n >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        out["pearson"] = float(stats.pearsonr(x, y).statistic)
        out["spearman"] = float(stats.spearmanr(x, y).statistic)
    return out


def run_tests(a: pd.DataFrame, b: pd.DataFrame, quantities: Sequence[str], epochs: Sequence[int], *,
              alpha: float = ALPHA, resamples: int = BOOTSTRAP, seed: int = 0, progress: bool = False) -> list[dict]:
    """Every test of two populations' frames (module docstring) with Holm-adjusted p-values and verdicts.

    ``quantities``: the columns compared as distributions (metrics, weight statistics); the paired tests
    use the metrics among them. Each test is a dict with ``scope``, ``statistic``, ``quantity``, ``epoch``,
    ``n_a``, ``n_b``, ``effect``, ``threshold``, ``p``, ``p_floor``, ``p_adjusted``, ``verdict`` and the
    statistic's own fields.
    """
    rng = np.random.default_rng(seed)
    metrics = [q for q in quantities if q in METRICS]
    keys = ["model_id", *HYPERPARAMETERS]
    tests = []
    groups = scopes(a, b)
    for scope, in_a, in_b in tqdm(groups, desc="statistics", unit="scope", disable=not progress):
        for epoch in epochs:
            sa, sb = a[in_a & (a.epoch == epoch)], b[in_b & (b.epoch == epoch)]
            head = {"scope": scope, "epoch": int(epoch)}
            tests.append(head | {"quantity": "nonfinite"} | nonfinite_test(sa.nonfinite, sb.nonfinite))
            fa, fb = sa[~sa.nonfinite], sb[~sb.nonfinite]
            for q in quantities:
                x, y = _finite(fa[q]), _finite(fb[q])
                if len(x) or len(y):
                    tests.append(head | {"quantity": q} | distribution_test(x, y, rng, resamples))
            pairs = fa[keys + metrics].merge(fb[keys + metrics], on=keys, suffixes=("_a", "_b"))
            for q in metrics if len(pairs) else ():
                both = pairs[[f"{q}_a", f"{q}_b"]].to_numpy(dtype=np.float64)
                both = both[np.isfinite(both).all(axis=1)]
                if len(both):
                    tests.append(head | {"quantity": q} | paired_test(both[:, 0], both[:, 1]))
    return judge(tests, alpha)


@functools.lru_cache(maxsize=4096)
def ks_resolution(n_a: int, n_b: int, level: float) -> float:
    """The smallest KS distance D that a two-sample KS test of ``n_a`` and ``n_b`` values flags at ``level``
    (scipy's p-value; NaN when not even D = 1 is flagged): bisection over evenly spread samples shifted apart."""
    x = (np.arange(n_a) + 0.5) / n_a

    def test(shift: float):
        return stats.ks_2samp(x, (np.arange(n_b) + 0.5) / n_b + shift)

    if test(1.0).pvalue >= level:
        return math.nan
    low, high = 0.0, 1.0
    while high - low > 1e-3:
        mid = (low + high) / 2
        low, high = (low, mid) if test(mid).pvalue < level else (mid, high)
    return float(test(high).statistic)


def judge(tests: list[dict], alpha: float = ALPHA) -> list[dict]:
    """Add ``threshold``, ``p_adjusted`` (Holm over all ``tests``), the ``verdict`` and, to distribution tests,
    their ``resolution`` (``ks_resolution`` at ``alpha / m``) to every test."""
    if not tests:
        return tests
    level = alpha / len(tests)
    for t, p in zip(tests, holm(np.array([t["p"] for t in tests])), strict=True):
        t["threshold"], t["p_adjusted"] = THRESHOLDS[t["statistic"]], float(p)
        if t["statistic"] == "distribution":
            t["resolution"] = ks_resolution(t["n_a"], t["n_b"], level) if t["n_a"] and t["n_b"] else math.nan
        if t["p_adjusted"] < alpha and t["effect"] >= t["threshold"]:
            t["verdict"] = DIFFERS
        elif min(t["n_a"], t["n_b"]) < MIN_MODELS or t["p_floor"] >= level:
            t["verdict"] = TOO_FEW
        else:
            t["verdict"] = SAME
    return tests


def overall(verdicts: Sequence[str]) -> str:
    """One verdict of many: differs if any differs, too few if all are too few, else same."""
    if DIFFERS in verdicts:
        return DIFFERS
    return TOO_FEW if all(v == TOO_FEW for v in verdicts) else SAME


# ---------------------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """What ``compare`` found: the sides, the spec differences (empty unless allowed), the compared epochs,
    every test (``run_tests``) and, for the figures, the final epoch's ``FIGURE_METRICS[0]`` values."""

    a: dict
    b: dict
    spec_differences: list[dict]
    notes: list[str]
    epochs: list[int]
    alpha: float
    tests: list[dict]
    final: dict = field(default_factory=dict)  # {"epoch": e, "quantity": q, "a": [...], "b": [...]}

    @property
    def verdict(self) -> str:
        return overall([t["verdict"] for t in self.tests])

    def counts(self) -> dict[str, int]:
        return {v: sum(t["verdict"] == v for t in self.tests) for v in (DIFFERS, TOO_FEW, SAME)}

    def select(self, **match: Any) -> list[dict]:
        """The tests whose fields equal ``match`` (e.g. ``scope="all", quantity="test_acc"``), in epoch order."""
        return [t for t in self.tests if all(t.get(k) == v for k, v in match.items())]

    def summary(self, scope: str | None = None) -> list[dict]:
        """One row per (scope, statistic, quantity) over the compared epochs: overall verdict, the epochs that
        differ, the largest effect and its epoch, the smallest adjusted p, and the last epoch's sample sizes."""
        rows: dict[tuple, list[dict]] = {}
        for t in self.tests:
            if scope is None or t["scope"] == scope:
                rows.setdefault((t["scope"], t["statistic"], t["quantity"]), []).append(t)
        out = []
        for (sc, statistic, quantity), tests in rows.items():
            effects = [t for t in tests if not math.isnan(t["effect"])]
            top = max(effects, key=lambda t: t["effect"]) if effects else None
            last = tests[-1]
            out.append({"scope": sc, "statistic": statistic, "quantity": quantity,
                        "verdict": overall([t["verdict"] for t in tests]),
                        "epochs_differ": [t["epoch"] for t in tests if t["verdict"] == DIFFERS],
                        "effect": top["effect"] if top else math.nan, "effect_epoch": top["epoch"] if top else None,
                        "p_adjusted": min(t["p_adjusted"] for t in tests), "n_a": last["n_a"], "n_b": last["n_b"],
                        "threshold": last["threshold"], "resolution": last.get("resolution")})
        return out

    def to_json(self) -> dict:
        """Everything, as plain JSON (non-finite numbers as null)."""
        return _plain({"verdict": self.verdict, "counts": self.counts(), "a": self.a, "b": self.b,
                       "spec_differences": self.spec_differences, "notes": self.notes, "epochs": self.epochs,
                       "alpha": self.alpha, "thresholds": THRESHOLDS, "min_models": MIN_MODELS,
                       "summary": self.summary(), "tests": self.tests, "final": self.final})


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _side_record(p: Population) -> dict:
    epochs = sorted(int(e) for e in p.frame.epoch.unique())
    return {"label": p.label, **p.source, "models": int(p.frame.model_id.nunique()), "epochs": epochs}


def compare(a: Side, b: Side, *, allow_spec_diff: bool = False, epochs: Sequence[int] | None = None,
            weights: bool = True, alpha: float = ALPHA, resamples: int = BOOTSTRAP, seed: int = 0,
            progress: bool = True) -> Comparison:
    """Compare side ``a`` (A) with side ``b`` (B); differences are B − A.

    ``epochs``: compare only these (default: every epoch both sides hold); ``weights=False`` skips the weight
    statistics (reads no weights). ValueError when the specs differ (naming every field and both values)
    unless ``allow_spec_diff``, or when the sides have no epoch in common.
    """
    spec_a, spec_b = a.spec(), b.spec()
    differ = spec_differences(spec_a, spec_b)
    if differ and not allow_spec_diff:
        named = "; ".join(f"{d['field']}: A {d['a']!r}, B {d['b']!r}" for d in differ)
        raise ValueError(f"the zoos have different specs ({spec_a.name} vs {spec_b.name}): {named}. Compare zoos of "
                         "one spec, or pass --allow-spec-diff (allow_spec_diff=True) to compare them anyway")
    za, zb = a.read("A", epochs, weights, progress), b.read("B", epochs, weights, progress)
    ra, rb = _side_record(za), _side_record(zb)
    common = sorted(set(ra["epochs"]) & set(rb["epochs"]))
    if not common:
        raise ValueError(f"the zoos have no epoch in common (A: {ra['epochs']}, B: {rb['epochs']}); choose epochs "
                         "both hold")
    notes = []
    if za.data_sha256 and zb.data_sha256 and za.data_sha256 != zb.data_sha256:
        notes.append(f"the image data differ (sha256 A {za.data_sha256[:12]}…, B {zb.data_sha256[:12]}…)")
    only = sorted(set(ra["epochs"]) ^ set(common)) + sorted(set(rb["epochs"]) ^ set(common))
    if only:
        notes.append(f"epochs held by one side only are not compared: {sorted(set(only))}")
    quantities = [c for c in za.frame.columns if c not in COLUMNS or c in METRICS]
    quantities = [c for c in quantities if c in zb.frame.columns]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's exact-to-asymptotic KS fallback notice
        tests = run_tests(za.frame, zb.frame, quantities, common, alpha=alpha, resamples=resamples, seed=seed,
                          progress=progress)
    last, metric = common[-1], FIGURE_METRICS[0]
    final = {"epoch": last, "quantity": metric,
             **{k: _finite(z.frame[(z.frame.epoch == last) & ~z.frame.nonfinite][metric]).tolist()
                for k, z in (("a", za), ("b", zb))}}
    return Comparison(ra, rb, differ, notes, common, alpha, tests, final)


# ---------------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value == math.inf:
        return "∞"
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return f"{value:.2g}" if value < 0.01 else f"{value:.2f}"


def _ranges(epochs: list[int]) -> str:
    parts, start = [], None
    for i, e in enumerate(epochs):
        start = e if start is None else start
        if i + 1 == len(epochs) or epochs[i + 1] != e + 1:
            parts.append(str(e) if start == e else f"{start}–{e}")
            start = None
    return ", ".join(parts) or "—"


def _describe_side(side: dict) -> str:
    where = f"`{side['path']}`" if side["kind"] == "zoo directory" else f"`{side['repo']}` config `{side['config']}`"
    run = (f", engine {side['engine']} (chunks of {side['chunk_size']}), device {side['device']}, numerics "
           + ", ".join(f"{k}={numerics_setting(k, v)}" for k, v in (side.get("numerics") or {}).items())
           if side["kind"] == "zoo directory" else "")
    return (f"**{side['label']}**: {side['kind']} {where}: zoo {side['zoo']}, {side['models']} models, epochs "
            f"{_ranges(side['epochs'])}{run}")


def _short(side: dict) -> str:
    """A side in a figure legend: its folder name, or repo:config."""
    return Path(side["path"]).name if side["kind"] == "zoo directory" else f"{side['repo']}:{side['config']}"


def _quantile_cell(q: list[float] | None) -> str:
    return "—" if q is None else f"{_num(q[3])} [{_num(q[1])}, {_num(q[5])}]"


def _verdict_cell(row: dict) -> str:
    """A summary row's verdict; a difference with its epochs and largest effect."""
    if row["verdict"] != DIFFERS:
        return row["verdict"]
    return f"**differs** (epochs {_ranges(row['epochs_differ'])}; {_num(row['effect'], 2)} at {row['effect_epoch']})"


def markdown(c: Comparison) -> str:
    """The report: spec differences, sides, verdict; for all models the metrics (and nonfinite), the weight
    statistics per tensor, the last epoch's distributions and paired statistics; one row per hyperparameter
    group."""
    counts = c.counts()
    lines = [f"# modelzoos compare: {c.verdict}", ""]
    if c.spec_differences:
        lines += ["**The specs differ** (compared because the difference was allowed):", "",
                  *(f"- `{d['field']}`: A {d['a']!r}, B {d['b']!r}" for d in c.spec_differences), ""]
    lines += [f"- {_describe_side(c.a)}", f"- {_describe_side(c.b)}", *(f"- Note: {n}" for n in c.notes), "",
              f"Compared epochs {_ranges(c.epochs)}; {len(c.tests)} tests, Holm-corrected to a family-wise error of "
              f"{c.alpha:g}: **{counts[DIFFERS]} differ**, {counts[TOO_FEW]} too few models to tell, "
              f"{counts[SAME]} same. A test differs when its adjusted p < {c.alpha:g} and its effect reaches the "
              "threshold (" + ", ".join(f"{s}: {EFFECTS[s]} ≥ {v:g}" for s, v in THRESHOLDS.items())
              + "); differences are B − A (docs/compare.md).", "", "## All models: metrics", ""]
    summary = c.summary("all")
    rows = [[r["statistic"], f"`{r['quantity']}`", _verdict_cell(r), _num(r["effect"]), _p(r["p_adjusted"]),
             f"{r['n_a']} / {r['n_b']}", _num(r["resolution"], 2)]
            for r in summary if r["quantity"] in (*METRICS, "nonfinite")]
    head = ["statistic", "quantity", "verdict over the epochs", "largest effect", "smallest adj. p",
            "n A / B (last epoch)", "KS resolution (last epoch)"]
    lines.append(markdown_table(head, rows))
    tensors = {r["quantity"].rsplit(".", 1)[0]: {} for r in summary if r["quantity"] not in (*METRICS, "nonfinite")}
    for r in summary:
        if r["quantity"] not in (*METRICS, "nonfinite"):
            tensor, statistic = r["quantity"].rsplit(".", 1)
            tensors[tensor][statistic] = _verdict_cell(r)
    if tensors:
        lines += ["", "## All models: weight statistics per parameter tensor (distribution tests)", ""]
        rows = [[f"`{t}`", *(v.get(s, "—") for s in WEIGHT_STATISTICS)] for t, v in tensors.items()]
        lines.append(markdown_table(["tensor", *WEIGHT_STATISTICS], rows))
    last = c.epochs[-1]
    final = [t for t in c.select(scope="all", epoch=last, statistic="distribution") if t["quantity"] in METRICS]
    lines += ["", f"## Epoch {last}: metrics, median [5 %, 95 %]", ""]
    head = ["quantity", "A", "B", f"median B − A [{CONFIDENCE:.0%} CI]", "KS D", "adj. p", "verdict"]
    lines.append(markdown_table(head, [
        [f"`{t['quantity']}`", _quantile_cell(t["quantiles_a"]), _quantile_cell(t["quantiles_b"]),
         f"{_num(t['median_difference'])} [{', '.join(_num(v) for v in t['median_interval'] or [])}]",
         _num(t["effect"]), _p(t["p_adjusted"]), t["verdict"]] for t in final]))
    paired = c.select(scope="all", epoch=last, statistic="paired")
    if paired:
        lines += ["", f"## Epoch {last}: paired models (same id and hyperparameters on both sides: {paired[0]['n_a']})",
                  ""]
        head = ["quantity", "Pearson r", "Spearman ρ", "B − A: median [5 %, 95 %]", "mean B − A", "Wilcoxon adj. p",
                "verdict"]
        lines.append(markdown_table(head, [
            [f"`{t['quantity']}`", _num(t["pearson"]), _num(t["spearman"]), _quantile_cell(t["difference_quantiles"]),
             _num(t["mean_difference"]), _p(t["p_adjusted"]), t["verdict"]] for t in paired]))
    groups = [s for s in dict.fromkeys(t["scope"] for t in c.tests) if s != "all"]
    if groups:
        lines += ["", "## Hyperparameter groups (every statistic over the epochs)", ""]
        rows = []
        for scope in groups:
            summary = c.summary(scope)
            verdicts = [r["verdict"] for r in summary]
            differ = [f"{r['quantity']} ({r['statistic']})" for r in summary if r["verdict"] == DIFFERS]
            (n,) = c.select(scope=scope, epoch=last, statistic="nonfinite")
            rows.append([f"`{scope}`", f"{n['n_a']} / {n['n_b']}", overall(verdicts),
                         str(verdicts.count(DIFFERS)), str(verdicts.count(TOO_FEW)), str(verdicts.count(SAME)),
                         ", ".join(differ[:6]) + (" …" if len(differ) > 6 else "") or "—"])
        head = ["group", "models A / B", "verdict", "differ", "too few", "same", "what differs"]
        lines.append(markdown_table(head, rows))
    lines += ["", "Figures: `compare.png` (learning-curve bands: median, 25–75 % and 5–95 %; final-epoch "
              f"`{FIGURE_METRICS[0]}` histograms; its quantile-quantile plot). Every test: `report.json`."]
    return "\n".join(lines) + "\n"


def figure(c: Comparison, path: Path) -> None:
    """Learning-curve bands of both sides overlaid (``FIGURE_METRICS``), the final epoch's histograms and Q-Q
    plot of ``FIGURE_METRICS[0]``, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(FIGURE_METRICS) + 2, figsize=(4.2 * (len(FIGURE_METRICS) + 2), 3.8))
    colours = {"a": "tab:blue", "b": "tab:orange"}
    for ax, metric in zip(axes, FIGURE_METRICS, strict=False):
        tests = c.select(scope="all", statistic="distribution", quantity=metric)
        for side, colour in colours.items():
            rows = [(t["epoch"], t[f"quantiles_{side}"]) for t in tests if t[f"quantiles_{side}"] is not None]
            if not rows:
                continue
            epochs, q = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
            ax.fill_between(epochs, q[:, 1], q[:, 5], color=colour, alpha=0.15, lw=0)
            ax.fill_between(epochs, q[:, 2], q[:, 4], color=colour, alpha=0.3, lw=0)
            ax.plot(epochs, q[:, 3], color=colour, label=f"{side.upper()}: {_short(getattr(c, side))}")
        ax.set(title=f"{metric}: median, 25–75 %, 5–95 %", xlabel="epoch", ylabel=metric)
        ax.legend(fontsize=7)
    x, y = np.asarray(c.final["a"]), np.asarray(c.final["b"])
    hist, qq = axes[len(FIGURE_METRICS)], axes[len(FIGURE_METRICS) + 1]
    if len(x) and len(y):
        bins = np.histogram_bin_edges(np.concatenate([x, y]), bins=30)
        for values, side in ((x, "a"), (y, "b")):
            hist.hist(values, bins=bins, alpha=0.5, color=colours[side],
                      label=f"{side.upper()}: {_short(getattr(c, side))} (n={len(values)})")
        levels = np.linspace(0, 1, 101)
        qa, qb = np.quantile(x, levels), np.quantile(y, levels)
        qq.plot(qa, qb, ".", ms=4)
        low, high = min(qa.min(), qb.min()), max(qa.max(), qb.max())
        qq.plot([low, high], [low, high], "k--", lw=0.8)
        hist.legend(fontsize=7)
    hist.set(title=f"{c.final['quantity']} at epoch {c.final['epoch']}", xlabel=c.final["quantity"], ylabel="models")
    qq.set(title=f"Q-Q, {c.final['quantity']} at epoch {c.final['epoch']}", xlabel="A quantile", ylabel="B quantile")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


REPORT_FILES = ("report.md", "report.json", "compare.png")


def write_report(c: Comparison, out: str | Path) -> list[Path]:
    """Write ``REPORT_FILES`` (Markdown, JSON, figure) into the folder ``out``; return their paths."""
    out = Path(out)
    paths = [out / name for name in REPORT_FILES]
    write_text(paths[0], markdown(c))
    write_json(paths[1], c.to_json())
    figure(c, paths[2])
    return paths
