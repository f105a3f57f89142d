"""The weight-space benchmark of ``modelzoos bench``: train and evaluate baselines on one config of a repository.

Baselines (features of the un-augmented weights of every split, docs/baselines.md):

| name       | features                                                                          |
|------------|-----------------------------------------------------------------------------------|
| ``stats``    | s(W): 7 statistics per parameter tensor (``features.layer_statistics``; 70 for CNN-s) |
| ``weights``  | W: the flat weight vector (CNN zoos only)                                          |
| ``hyperrep`` | the latent z of a hyper-representation (``hyperrep``)                              |
| ``sane``     | per-layer mean and std of a SANE model's token latents (``sane``)                  |
| ``sampling`` | not a probe: accuracy of models sampled from the hyper-representation (``sampling``); |
|            | without ``hyperrep`` in the list it trains one, and its time counts under sampling       |

Samples: the states of the chosen epochs, cleaned as the original loader did before any baseline sees
them (``data.ZooSource``: non-finite states and states with |w| above ``weight_threshold``, default 5,
dropped per state; the counts per rule and split are in the results).

Targets: R² of ``test_acc``, ``ggap`` and ``epoch``; on zoos where they vary, R² of ``lr``,
``weight_decay``, ``dropout`` and accuracy of ``activation``, ``init`` and ``optimizer``. Probes, one row
each per baseline:

- ``ridge``: the protocol's closed-form ridge (§11.3, unstandardised, penalised intercept), the reference
  row; categorical targets by the §11.4 linear softmax classifier;
- ``ridge_std``: ridge on standardised features with an unpenalised intercept and a wider λ grid
  (``probes.standardized_ridge_probe``); categorical targets by the same classifier on standardised features;
- ``gbm``: gradient boosting early-stopped on validation, for features of ≤ ``GBM_MAX_DIMS`` dims.

All probes fit on train, select on validation, and are reported on the test split's models (disjoint by
construction of the repository's splits). The table flags a test R² below −1 (†) and a λ at the edge of
its grid (‡). Every run reports the epochs used as samples.

Outputs in ``--out``: ``results.json`` (everything, incl. train/val scores, chosen λ and flags),
``results.md`` (the printed table) and ``bench.png`` (per baseline, predicted vs true test accuracy of the
test split by its best probe on validation, axes clipped to the targets' range, points coloured by epoch;
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

from modelzoos.baselines.data import RULES, SPLITS, WEIGHT_THRESHOLD, ZooSource
from modelzoos.baselines.features import layer_statistics, raw_weights
from modelzoos.baselines.hyperrep import HyperRepConfig, train_hyperrep
from modelzoos.baselines.probes import (
    ProbeResult,
    gbm_probe,
    linear_probe,
    ridge_probe,
    standardize,
    standardized_ridge_probe,
)
from modelzoos.baselines.sampling import METHODS, SamplingConfig, sample_and_evaluate
from modelzoos.baselines.sane import SaneConfig, train_sane
from modelzoos.card import markdown_table

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
    """``{probe: {target: ProbeResult}}``: ridge and ridge_std (+ the linear classifier on raw and on
    standardised features), and gbm on small features."""
    def y(target: str) -> dict[str, np.ndarray]:
        return {s: np.asarray(meta[s][target]) for s in SPLITS}

    scaled = standardize(features)
    out: dict[str, dict[str, ProbeResult]] = {
        "ridge": {t: ridge_probe(features, y(t)) for t in regression}
        | {t: linear_probe(features, y(t), device=device) for t in classification},
        "ridge_std": {t: standardized_ridge_probe(features, y(t)) for t in regression}
        | {t: linear_probe(scaled, y(t), device=device) for t in classification},
    }
    if features["train"].shape[1] <= GBM_MAX_DIMS:
        out["gbm"] = {t: gbm_probe(features, y(t)) for t in regression}
    return out


def best_probe(probes: dict[str, dict[str, ProbeResult]], target: str = "test_acc") -> str:
    """The probe with the best validation score on ``target`` (never chosen on test)."""
    return max((p for p in probes if target in probes[p]), key=lambda p: probes[p][target].scores["val"])


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------


def run_bench(repo: str | Path, config: str, baselines: Sequence[str] = DEFAULT_BASELINES,
              out: str | Path | None = None, *, device: str = "cpu", epochs: Sequence[int] | None = None,
              weight_threshold: float | None = WEIGHT_THRESHOLD, streaming: bool = False, workers: int = 0,
              progress: bool = True,
              hyperrep: HyperRepConfig | None = None, sane: SaneConfig | None = None,
              sampling: SamplingConfig | None = None) -> dict[str, Any]:
    """Train and evaluate ``baselines`` on ``config`` of ``repo``; write the outputs to ``out`` if given.

    ``epochs``: the epochs used as samples (None: all); ``weight_threshold``: states with any |w| above it
    are dropped (inf or None: the rule is off; non-finite states are always dropped). ``hyperrep``,
    ``sane``, ``sampling``: configurations (None: the defaults). Returns the ``results.json`` content. See
    the module docstring for baselines, targets and outputs.
    """
    hyperrep, sane, sampling = hyperrep or HyperRepConfig(), sane or SaneConfig(), sampling or SamplingConfig()
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown or not baselines:
        raise ValueError(f"unknown baselines {unknown or list(baselines)}; valid: {', '.join(BASELINES)}")
    source = ZooSource(repo, config, epochs, weight_threshold, streaming=streaming, workers=workers)
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
        "filtering": {"weight_threshold": source.weight_threshold, "rules": list(RULES),
                      "splits": {s: source.removed(s) for s in SPLITS}},
        "targets": {"regression": regression, "classification": classification},
        "baselines": {}, "sampling": None,
    }
    plots: dict[str, Any] = {"predictions": {}, "epochs": {}, "embedding": None}
    trained: dict[str, Any] = {}

    def featurise(name: str, fn: Callable) -> None:
        feats, rows = {}, {}
        for s in SPLITS:
            feats[s], rows[s] = source.extract(s, fn, progress=progress, desc=f"{name} {s}")
        trained[f"{name}_features"], trained[f"{name}_meta"] = feats, rows
        probes = probe_features(feats, rows, regression, classification, device)
        results["baselines"][name] = {"dims": int(feats["train"].shape[1]), "probes": {
            p: {t: r.to_json() for t, r in by_target.items()} for p, by_target in probes.items()}}
        best = best_probe(probes)
        results["baselines"][name]["best_probe"] = best
        plots["predictions"][name] = (best, probes[best]["test_acc"])
        plots["epochs"][name] = rows["test"]["epoch"]

    for name in [b for b in BASELINES if b in baselines]:
        start, peak = time.perf_counter(), _peak_mb(resource.RUSAGE_SELF)
        log.info("baseline %s", name)
        if name == "stats":
            featurise(name, lambda w: layer_statistics(w, source.layout))
        elif name == "weights":
            if source.dim > RAW_MAX_DIMS:
                results["baselines"][name] = {"skipped": f"D = {source.dim:,} weights > {RAW_MAX_DIMS:,}: no raw "
                                                         "feature matrix for this architecture (use stats or sane)"}
                continue
            featurise(name, raw_weights)
        elif name == "hyperrep":
            trained["hyperrep"] = train_hyperrep(source, hyperrep, device=device, progress=progress)
            featurise(name, trained["hyperrep"].embed)
            results["baselines"][name]["history"] = trained["hyperrep"].history
            test = trained["hyperrep_features"]["test"]
            plots["embedding"] = (test, trained["hyperrep_meta"]["test"]["test_acc"])
        elif name == "sane":
            model = train_sane(source, sane, device=device, progress=progress)
            featurise(name, model.embed)
            results["baselines"][name]["history"] = model.history
        elif name == "sampling":
            results["sampling"] = run_sampling(source, trained, hyperrep, sampling, device=device, progress=progress)
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


def run_sampling(source: ZooSource, trained: dict[str, Any], hyperrep: HyperRepConfig, sampling: SamplingConfig, *,
                 device: str, progress: bool) -> dict[str, Any]:
    """The ``sampling`` entry of the results: S_KDE30 from the hyperrep baseline's model (reused when it was
    trained in this run on the same epochs) or from a generator of its own (``sampling.hyperrep``)."""
    gen_source = source if sampling.epochs is None else dataclasses.replace(source, epochs=sampling.epochs)
    reuse = sampling.hyperrep is None and sampling.epochs is None and "hyperrep" in trained
    if reuse:
        rep = trained["hyperrep"]
        latents, rows = trained["hyperrep_features"]["train"], trained["hyperrep_meta"]["train"]
    else:
        rep = train_hyperrep(gen_source, sampling.hyperrep or hyperrep, device=device, progress=progress)
        latents, rows = gen_source.extract("train", rep.embed, progress=progress, desc="sampling latents")
    result = sample_and_evaluate(rep, gen_source, latents, rows, sampling, device=device, progress=progress)
    summary = {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
               for k, v in result["accuracy"].items()}
    nearest = result["nearest"]
    summary["nearest"] = {m: {"relative_median": float(np.median(nearest[f"{m}_relative"])),
                              "nearest_acc_median": float(np.median(nearest[f"{m}_nearest_acc"])),
                              "distinct_nearest_models": len(set(nearest[f"{m}_nearest_models"]))} for m in METHODS}
    summary["nearest"]["between_models"] = {"relative_median": float(np.median(nearest["between_models_relative"]))}
    return {"config": dataclasses.asdict(sampling), "generator": "hyperrep baseline" if reuse else "own",
            "generator_history": rep.history, **result, "summary": summary}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---------------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------------


MARKS = {"r2<-1": "†", "lambda-edge": "‡"}


def _fmt(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


def _cell(result: dict | None) -> str:
    if result is None:
        return "—"
    return _fmt(result["test"]) + "".join(MARKS[f] for f in result.get("flags", ()))


def _epochs_text(epochs: list[int]) -> str:
    contiguous = epochs == list(range(epochs[0], epochs[-1] + 1))
    return f"{epochs[0]}–{epochs[-1]}" if contiguous and len(epochs) > 2 else ", ".join(map(str, epochs))


def filtering_table(filtering: dict[str, Any]) -> str:
    """States (models) per split: stored at the chosen epochs, removed by each rule, left."""
    threshold = filtering["weight_threshold"]
    label = {"nonfinite": "non-finite", "threshold": rf"\|w\| > {threshold:g}" if np.isfinite(threshold) else
             r"\|w\| threshold (off)"}  # pipes escaped inside a table cell
    head = ["split", "states (models)", *(f"removed: {label[r]}" for r in filtering["rules"]), "models emptied",
            "kept states (models)"]
    def pair(counts: dict) -> str:
        return f"{counts['states']} ({counts['models']})"

    rows = [[split, pair(c), *(pair(c[r]) for r in filtering["rules"]), str(c["models_emptied"]),
             f"{c['kept_states']} ({c['kept_models']})"] for split, c in filtering["splits"].items()]
    return markdown_table(head, rows)


def markdown(results: dict[str, Any]) -> str:
    """The results table: R² (or accuracy) on the test split per baseline and probe, time and memory."""
    regression, classification = results["targets"]["regression"], results["targets"]["classification"]
    splits = ", ".join(f"{s} {v['models']} models / {v['rows']} rows" for s, v in results["splits"].items())
    lines = [f"# modelzoos bench: {results['config']}", "",
             f"repo `{results['repo']}`; epochs used as samples: {_epochs_text(results['epochs'])}; {splits} "
             f"(after cleaning); device {results['device']}.", "",
             "Cleaning (per state, weights only, before any baseline):", "", filtering_table(results["filtering"]), "",
             "Test split. Regression targets: R². ridge: the protocol's (unstandardised, penalised intercept, "
             "λ on validation), the reference row; ridge_std: standardised features, unpenalised intercept, wider λ "
             "grid; gbm: HistGradientBoosting early-stopped on validation. Categorical targets: accuracy of the "
             "protocol's linear softmax probe on raw (ridge rows) or standardised (ridge_std rows) features. "
             "† test R² below −1; ‡ λ at the edge of its grid. What each probe means: docs/baselines.md.", ""]
    head = ["baseline", "probe", "dims", *regression, *(f"{c} (acc)" for c in classification), "time s", "peak MB"]
    rows = []
    for name, entry in results["baselines"].items():
        if "skipped" in entry:
            rows.append([name, "—", "—", *(["—"] * (len(head) - 5)), "—", f"skipped: {entry['skipped']}"])
            continue
        for probe, by_target in entry["probes"].items():
            cells = [_cell(by_target.get(t)) for t in (*regression, *classification)]
            first = probe == next(iter(entry["probes"]))
            rows.append([name, probe, str(entry["dims"]), *cells, f"{entry['time_s']:.1f}" if first else "",
                         f"{entry['peak_rss_mb']:.0f}" if first else ""])
    lines.append(markdown_table(head, rows))
    if results.get("sampling"):
        lines += ["", sampling_table(results["sampling"])]
    return "\n".join(lines)


SAMPLING_LABELS = {"anchors": "zoo anchors (top 30 % of train rows)",
                   "reconstructed": "anchors decoded from their own latents",
                   "sampled": "S_KDE30: per-dimension KDE of latents, decoded (R22)",
                   "sampled_joint": "joint KDE of latents, decoded (samples around one anchor)",
                   "weight_kde": "B_KDE30: per-dimension KDE of weights, no hyper-representation",
                   "random": "random init"}


def sampling_table(s: dict[str, Any]) -> str:
    """Test accuracy per method, untrained and after fine-tuning, and the distance to the nearest training
    checkpoint (relative L2, median) against the distance between two training models."""
    ft = s["config"].get("finetune_epochs", 1)
    near, summary = s["summary"]["nearest"], s["summary"]
    rows = []
    for key, label in SAMPLING_LABELS.items():
        cells = [f"{summary[k]['mean']:.3f} ± {summary[k]['std']:.3f}" if k in summary else "—"
                 for k in (key, f"{key}_ft")]
        distance = (f"{near[key]['relative_median']:.3f} ({near[key]['distinct_nearest_models']} models, their "
                    f"acc. {near[key]['nearest_acc_median']:.3f})" if key in near else "—")
        rows.append([label, *cells, distance, str(summary[key]["n"])])
    head = ["models", "test acc., no training", f"after {ft} epoch(s)",
            "nearest training checkpoint: rel. distance", "n"]
    return "\n".join([f"Sampling (generator: {s['generator']}; {s['time_s']:.1f} s, peak {s['peak_rss_mb']:.0f} MB; "
                      f"relative distance between two training models: "
                      f"{near['between_models']['relative_median']:.3f}):", "", markdown_table(head, rows)])


def figure(plots: dict[str, Any], path: Path) -> None:
    """Per baseline, predicted vs true test accuracy (test split, best probe on validation, clipped to the
    targets' range, coloured by epoch), and the hyperrep PCA embedding."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    panels = list(plots["predictions"].items())
    count = len(panels) + (plots["embedding"] is not None)
    fig, axes = plt.subplots(1, max(count, 1), figsize=(4.4 * max(count, 1), 4), squeeze=False)
    for ax, (name, (probe, result)) in zip(axes[0], panels, strict=False):
        true, pred = result.targets["test"], result.predictions["test"]
        low, high = float(true.min()), float(true.max())
        pad = 0.05 * (high - low or 1.0)
        low, high = low - pad, high + pad
        outside = int(((pred < low) | (pred > high)).sum())
        points = ax.scatter(true, np.clip(pred, low, high), c=plots["epochs"][name], s=8, alpha=0.7, cmap="viridis")
        ax.plot([low, high], [low, high], "k--", lw=0.8)
        ax.set(xlim=(low, high), ylim=(low, high), xlabel="true test accuracy", ylabel=f"predicted ({probe})",
               title=f"{name}: R² {result.scores['test']:.3f}" + (f", {outside} clipped" if outside else ""))
        fig.colorbar(points, ax=ax, label="epoch")
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
