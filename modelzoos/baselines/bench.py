"""The weight-space benchmark of ``modelzoos bench``: train and evaluate baselines on one config of a repository.

Baselines (features of the un-augmented weights of every split, protocol §11):

| name       | features                                                                          |
|------------|-----------------------------------------------------------------------------------|
| ``stats``    | s(W): 7 statistics per parameter tensor (``features.layer_statistics``; 70 for CNN-s) |
| ``weights``  | W: the flat weight vector (CNN zoos only)                                          |
| ``hyperrep`` | the latent z of a hyper-representation (``hyperrep``)                              |
| ``sane``     | the mean token latent of a SANE model (``sane``)                                   |
| ``sampling`` | not a probe: accuracy of models sampled from the hyper-representation (``sampling``); |
|            | without ``hyperrep`` in the list it trains one, and its time counts under sampling       |

Targets: R² of ``test_acc``, ``ggap`` and ``epoch`` (closed-form ridge, §11.3; also gradient boosting for
features of ≤ ``GBM_MAX_DIMS`` dims); on zoos where they vary, accuracy of ``activation``, ``init`` and
``optimizer`` (linear softmax probe, §11.4) and R² of ``lr``, ``weight_decay``, ``dropout`` (ridge). All
probes fit on train, select on validation, and are reported on the test split's models (disjoint by
construction of the repository's splits). Every run reports the epochs used as samples.

Outputs in ``--out``: ``results.json`` (everything, incl. train/val scores and chosen λ), ``results.md``
(the printed table) and ``bench.png`` (predicted vs true test accuracy on the test split per baseline;
the hyper-representation's test embeddings projected to 2-D by PCA, coloured by test accuracy). Time is
wall-clock per baseline (features + training + probes); memory is ``ru_maxrss`` of this process (the high
water mark so far, so it never decreases from one baseline to the next) and of the largest finished
DataLoader worker.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelzoos.baselines.data import SPLITS, ZooSource
from modelzoos.baselines.features import layer_statistics, raw_weights
from modelzoos.baselines.hyperrep import HyperRepConfig, train_hyperrep
from modelzoos.baselines.probes import ProbeResult, gbm_probe, linear_probe, ridge_probe
from modelzoos.baselines.sampling import SamplingConfig, sample_and_evaluate
from modelzoos.baselines.sane import SaneConfig, train_sane

log = logging.getLogger(__name__)

BASELINES = ("stats", "weights", "hyperrep", "sane", "sampling")
DEFAULT_BASELINES = ("stats", "weights", "hyperrep")
CONTINUOUS = ("test_acc", "ggap", "epoch")
NUMERIC_HYPERPARAMETERS = ("lr", "weight_decay", "dropout")
CATEGORICAL_HYPERPARAMETERS = ("activation", "init", "optimizer")
GBM_MAX_DIMS = 1024
RAW_MAX_DIMS = 100_000  # raw weights beyond this (ResNet-18: 11M) are not a feature matrix we build


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def targets(meta: dict[str, dict[str, np.ndarray]]) -> tuple[list[str], list[str]]:
    """(regression targets, classification targets): the standard ones plus the hyperparameters that vary."""
    def varies(column: str) -> bool:
        values = [v for s in SPLITS if column in meta[s] for v in np.asarray(meta[s][column]).tolist()]
        return len(set(values)) > 1

    regression = list(CONTINUOUS) + [c for c in NUMERIC_HYPERPARAMETERS if varies(c)]
    return regression, [c for c in CATEGORICAL_HYPERPARAMETERS if varies(c)]


def probe_features(features: dict[str, np.ndarray], meta: dict[str, dict[str, np.ndarray]], regression: list[str],
                   classification: list[str], device: str) -> dict[str, dict[str, ProbeResult]]:
    """``{probe: {target: ProbeResult}}`` for ridge (+ linear classifier), and gbm on small features."""
    def y(target: str) -> dict[str, np.ndarray]:
        return {s: np.asarray(meta[s][target]) for s in SPLITS}

    out: dict[str, dict[str, ProbeResult]] = {"ridge": {t: ridge_probe(features, y(t)) for t in regression}}
    out["ridge"] |= {t: linear_probe(features, y(t), device=device) for t in classification}
    if features["train"].shape[1] <= GBM_MAX_DIMS:
        out["gbm"] = {t: gbm_probe(features, y(t)) for t in regression}
    return out


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------


def run_bench(repo: str | Path, config: str, baselines: Sequence[str] = DEFAULT_BASELINES,
              out: str | Path | None = None, *, device: str = "cpu", epochs: Sequence[int] | None = None,
              streaming: bool = False, workers: int = 0, progress: bool = True,
              hyperrep: HyperRepConfig | None = None, sane: SaneConfig | None = None,
              sampling: SamplingConfig | None = None) -> dict[str, Any]:
    """Train and evaluate ``baselines`` on ``config`` of ``repo``; write the outputs to ``out`` if given.

    ``hyperrep``, ``sane``, ``sampling``: configurations (None: the defaults). Returns the ``results.json``
    content. See the module docstring for baselines, targets and outputs.
    """
    hyperrep, sane, sampling = hyperrep or HyperRepConfig(), sane or SaneConfig(), sampling or SamplingConfig()
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown or not baselines:
        raise ValueError(f"unknown baselines {unknown or list(baselines)}; valid: {', '.join(BASELINES)}")
    source = ZooSource(repo, config, epochs, streaming=streaming, workers=workers)
    meta = {s: source.metadata(s) for s in SPLITS}
    regression, classification = targets(meta)
    train_ids = set(meta["train"]["model_id"].tolist())
    if train_ids & set(meta["test"]["model_id"].tolist()):
        raise ValueError(f"{config!r}: test models also appear in train; the repository's splits are broken")
    results: dict[str, Any] = {
        "config": config, "repo": str(repo), "device": device, "streaming": streaming,
        "epochs": sorted(set(meta["train"]["epoch"].tolist())),
        "splits": {s: {"rows": len(meta[s]["epoch"]), "models": len(set(meta[s]["model_id"].tolist()))}
                   for s in SPLITS},
        "targets": {"regression": regression, "classification": classification},
        "baselines": {}, "sampling": None,
    }
    plots: dict[str, Any] = {"predictions": {}, "embedding": None}
    trained: dict[str, Any] = {}

    def featurise(name: str, fn: Callable, dims: int) -> None:
        feats, rows = {}, {}
        for s in SPLITS:
            feats[s], rows[s] = source.extract(s, fn, progress=progress, desc=f"{name} {s}")
        trained[f"{name}_features"], trained[f"{name}_meta"] = feats, rows
        probes = probe_features(feats, rows, regression, classification, device)
        results["baselines"][name] = {"dims": dims, "probes": {
            p: {t: r.to_json() for t, r in by_target.items()} for p, by_target in probes.items()}}
        plots["predictions"][name] = probes["ridge"]["test_acc"]

    for name in [b for b in BASELINES if b in baselines]:
        start, peak = time.perf_counter(), _peak_mb(resource.RUSAGE_SELF)
        log.info("baseline %s", name)
        if name == "stats":
            featurise(name, lambda w: layer_statistics(w, source.layout), 7 * sum(
                e.kind == "parameter" for e in source.layout.entries))
        elif name == "weights":
            if source.dim > RAW_MAX_DIMS:
                results["baselines"][name] = {"skipped": f"D = {source.dim:,} weights > {RAW_MAX_DIMS:,}: no raw "
                                                         "feature matrix for this architecture (use stats or sane)"}
                continue
            featurise(name, raw_weights, source.dim)
        elif name == "hyperrep" or (name == "sampling" and "hyperrep" not in trained):
            trained["hyperrep"] = train_hyperrep(source, hyperrep, device=device, progress=progress)
            if name == "hyperrep":
                featurise(name, trained["hyperrep"].embed, hyperrep.latent)
                results["baselines"][name]["history"] = trained["hyperrep"].history
                test = trained["hyperrep_features"]["test"]
                plots["embedding"] = (test, trained["hyperrep_meta"]["test"]["test_acc"])
        elif name == "sane":
            model = train_sane(source, sane, device=device, progress=progress)
            featurise(name, model.embed, sane.latent)
            results["baselines"][name]["history"] = model.history
        if name == "sampling":
            rep = trained["hyperrep"]
            if "hyperrep_features" in trained:
                latents, rows = trained["hyperrep_features"]["train"], trained["hyperrep_meta"]["train"]
            else:
                latents, rows = source.extract("train", rep.embed, progress=progress, desc="sampling latents")
            accuracy = sample_and_evaluate(rep, source, latents, rows, sampling, device=device, progress=progress)
            results["sampling"] = {"config": dataclasses.asdict(sampling),
                                   "accuracy": accuracy, "summary": {
                                       k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
                                       for k, v in accuracy.items()}}
        entry = results["sampling"] if name == "sampling" else results["baselines"][name]
        now = _peak_mb(resource.RUSAGE_SELF)
        entry |= {"time_s": round(time.perf_counter() - start, 2), "peak_rss_mb": round(now, 1),
                  "peak_rss_growth_mb": round(now - peak, 1),
                  "worker_peak_rss_mb": round(_peak_mb(resource.RUSAGE_CHILDREN), 1)}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
        (out / "results.md").write_text(markdown(results) + "\n")
        figure(plots, out / "bench.png")
    return results


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---------------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _epochs_text(epochs: list[int]) -> str:
    contiguous = epochs == list(range(epochs[0], epochs[-1] + 1))
    return f"{epochs[0]}–{epochs[-1]}" if contiguous and len(epochs) > 2 else ", ".join(map(str, epochs))


def markdown(results: dict[str, Any]) -> str:
    """The results table: R² (or accuracy) on the test split per baseline and probe, time and memory."""
    regression, classification = results["targets"]["regression"], results["targets"]["classification"]
    splits = ", ".join(f"{s} {v['models']} models / {v['rows']} rows" for s, v in results["splits"].items())
    lines = [f"# modelzoos bench: {results['config']}", "",
             f"repo `{results['repo']}`; epochs used as samples: {_epochs_text(results['epochs'])}; {splits}; "
             f"device {results['device']}.", "",
             "Test split. Regression targets: R² (ridge per protocol §11.3: λ chosen on validation; gbm: "
             "HistGradientBoosting early-stopped on validation). Categorical targets: accuracy of the linear "
             "softmax probe (§11.4), shown on the ridge rows.", ""]
    head = ["baseline", "probe", "dims", *regression, *(f"{c} (acc)" for c in classification), "time s", "peak MB"]
    rows = []
    for name, entry in results["baselines"].items():
        if "skipped" in entry:
            rows.append([name, "—", "—", *(["—"] * (len(head) - 5)), "—", f"skipped: {entry['skipped']}"])
            continue
        for probe, by_target in entry["probes"].items():
            cells = [_fmt(by_target[t]["test"]) if t in by_target else "—" for t in (*regression, *classification)]
            first = probe == next(iter(entry["probes"]))
            rows.append([name, probe, str(entry["dims"]), *cells, f"{entry['time_s']:.1f}" if first else "",
                         f"{entry['peak_rss_mb']:.0f}" if first else ""])
    lines.append(_table(head, rows))
    if results.get("sampling"):
        s = results["sampling"]
        ft = s["config"].get("finetune_epochs", 1)
        labels = {"anchors": "zoo anchors (top 30 % of train rows)", "sampled": "sampled (S_KDE30), no training",
                  "sampled_ft": f"sampled + {ft} epoch(s)", "random": "random init, no training",
                  "random_ft": f"random init + {ft} epoch(s)"}
        rows = [[labels[k], f"{v['mean']:.3f} ± {v['std']:.3f}", str(v["n"])] for k, v in s["summary"].items()]
        lines += ["", f"Sampling (test accuracy; {s['time_s']:.1f} s, peak {s['peak_rss_mb']:.0f} MB):", "",
                  _table(["models", "test accuracy", "n"], rows)]
    return "\n".join(lines)


def figure(plots: dict[str, Any], path: Path) -> None:
    """Predicted vs true test accuracy per baseline (ridge, test split) and the hyperrep PCA embedding."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    panels = list(plots["predictions"].items())
    count = len(panels) + (plots["embedding"] is not None)
    fig, axes = plt.subplots(1, max(count, 1), figsize=(4 * max(count, 1), 4), squeeze=False)
    for ax, (name, result) in zip(axes[0], panels, strict=False):
        true, pred = result.targets["test"], result.predictions["test"]
        ax.scatter(true, pred, s=8, alpha=0.6)
        low, high = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
        ax.plot([low, high], [low, high], "k--", lw=0.8)
        ax.set(title=f"{name}: R² {result.scores['test']:.3f}", xlabel="true test accuracy",
               ylabel="predicted (ridge)")
    if plots["embedding"] is not None:
        ax = axes[0][len(panels)]
        z, acc = plots["embedding"]
        xy = PCA(n_components=2, random_state=0).fit_transform(z) if len(z) > 2 else np.zeros((len(z), 2))
        points = ax.scatter(xy[:, 0], xy[:, 1], c=acc, s=8, cmap="viridis")
        fig.colorbar(points, ax=ax, label="test accuracy")
        ax.set(title="hyperrep embeddings (test), PCA", xlabel="PC 1", ylabel="PC 2")
    if count == 0:
        axes[0][0].text(0.5, 0.5, "no probe baseline run", ha="center")
        axes[0][0].set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
