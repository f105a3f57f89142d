"""The weight-space baselines on the two digits zoos of BENCHMARKS.md: full bench runs, ablations, sampling.

Zoos (generated once, built into one repository folder; commands in BENCHMARKS.md):

- seed zoo: ``digits_cnn_seed``, 100 models × epochs 0–15 (as ``make demo``);
- hyperparameter zoo: ``benchmarks/digits_cnn_hyp_lr10.toml`` (the Hyp-10-rand grid with learning rates
  ×10), the first 256 models × epochs 0–30;
- for sampling, seed zoos from the MNIST seed zoo's U[0, 1) init: ``benchmarks/digits_cnn_seed_u.toml``
  (100 models × epochs 0–15), ``benchmarks/digits_cnn_seed_u_wd0.toml`` (100 models × epochs 0–40) and
  ``benchmarks/digits_cnn_seed_u_long.toml`` (the MNIST recipe, 60 models × epochs 0–800).

Commands (every result lands in ``--out`` as JSON + markdown; rerunning a variant overwrites its file)::

    python benchmarks/bench_digits.py bench --repo runs/hub --config digits_cnn_seed --out DIR \\
        [--baselines stats,weights,hyperrep,sane,sampling] [--epochs-filter 0-15] [--hyperrep NAME] [--sane NAME]
    python benchmarks/bench_digits.py ablation hyperrep --repo runs/hub --config CONFIG --out DIR --variants a,b
    python benchmarks/bench_digits.py ablation sane ...
    python benchmarks/bench_digits.py sampling --repo runs/hub --config digits_cnn_seed --out DIR --variants a,b
    python benchmarks/bench_digits.py mixing --repo runs/hub --config digits_cnn_seed --epochs-filter 11-15 --out DIR
    python benchmarks/bench_digits.py coverage --repo runs/hub --config CONFIG --variant NAME --out DIR [--target T]
    python benchmarks/bench_digits.py copies --repo runs/hub --config digits_cnn_seed --epochs-filter 11-15 --out DIR
    python benchmarks/bench_digits.py constant --repo runs/hub --config CONFIG --out DIR   # R² of the training mean
    python benchmarks/bench_digits.py table --out DIR          # the ablation / sampling table of DIR's JSONs

Ablation variants are named entries of ``HYPERREP`` / ``SANE`` below (validation scores choose between
them; test scores are reported beside). One torch thread throughout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from modelzoos.baselines.bench import markdown, run_bench, sampling_table
from modelzoos.baselines.data import ZooSource, parse_threshold
from modelzoos.baselines.features import layer_statistics, stat_names
from modelzoos.baselines.hyperrep import HyperRepConfig, train_hyperrep
from modelzoos.baselines.probes import r2_score, standardized_ridge_probe
from modelzoos.baselines.sampling import SamplingConfig, anchors, kde_sample
from modelzoos.baselines.sane import SaneConfig
from modelzoos.cli import parse_epochs
from modelzoos.data import load_image_data
from modelzoos.loading import WEIGHTS, evaluate_row
from modelzoos.repository import SPLITS
from modelzoos.transforms import Permutation, PermutationSpec

# R21's recipe (MNIST-Hyp: compression token, layer-wise statistics, erasing p 0.5, shuffled rows, γ 0.1) at our
# model size; V1, the defaults chosen on the seed zoo (mean pooling, latent 32, γ 0.5); V2 = V1 + latent 128 and
# γ 0.9; V3 = V2 + per-layer moments pooling; the defaults = V3 + latent 256 and 40 epochs; one change at a time
# from each. V1 → V2 → V3 → default were chosen on validation over three seeds on both digits zoos (BENCHMARKS.md).
DEFAULT = HyperRepConfig()
V3 = dataclasses.replace(DEFAULT, latent=128, projection=(128, 64), epochs=20)
V2 = dataclasses.replace(V3, pooling="mean")
V1 = dataclasses.replace(V2, latent=32, projection=(64, 32), gamma=0.5)
R21 = dataclasses.replace(V1, pooling="token", normalisation="layer", erase_p=0.5, models_per_batch=0, gamma=0.1)


Config = TypeVar("Config", HyperRepConfig, SaneConfig)


def seeded(name: str, config: Config, seeds: tuple[int, ...] = (1, 2)) -> dict[str, Config]:
    """``{name: config, name_seed1: config with seed 1, ...}``: a variant and its reruns with other seeds."""
    return {name: config, **{f"{name}_seed{s}": dataclasses.replace(config, seed=s) for s in seeds}}


HYPERREP: dict[str, HyperRepConfig] = {
    **seeded("default", DEFAULT),
    **seeded("v3", V3),
    **seeded("extremes", dataclasses.replace(V3, pooling="extremes")),
    **seeded("rows", dataclasses.replace(V3, models_per_batch=0)),
    **seeded("g05", dataclasses.replace(V3, gamma=0.5)),
    **seeded("e40", dataclasses.replace(V3, epochs=40)),
    **seeded("l256", dataclasses.replace(V3, latent=256, projection=(256, 128))),
    "r21": R21,
    "r21_mean": dataclasses.replace(R21, pooling="mean"),
    "r21_tensor": dataclasses.replace(R21, normalisation="tensor"),
    "r21_noerase": dataclasses.replace(R21, erase_p=0.0),
    "r21_runs": dataclasses.replace(R21, models_per_batch=4),
    **seeded("v2", V2),
    "v2_mpb8": dataclasses.replace(V2, models_per_batch=8),
    **seeded("v1", V1),
    "v1_rows": dataclasses.replace(V1, models_per_batch=0),
    "v1_erase": dataclasses.replace(V1, erase_p=0.5),
    "v1_token": dataclasses.replace(V1, pooling="token"),
    "v1_l128": dataclasses.replace(V1, latent=128, projection=(128, 64)),
    "v1_l256": dataclasses.replace(V1, latent=256, projection=(256, 128)),
    "v1_e60": dataclasses.replace(V1, epochs=60),
    "v1_g01": dataclasses.replace(V1, gamma=0.1),
    "v1_big": dataclasses.replace(V1, d_model=128, ffn=256, latent=128, projection=(128, 64), epochs=40),
}

# SANE's own recipe (the default before per-tensor statistics, γ 0.5 and whole-run batches were measured to
# help on the two kaiming digits zoos, level on U[0, 1)): per-layer statistics, γ 0.05, shuffled rows; the
# variants change it.
SANE_RECIPE = SaneConfig(normalisation="layer", gamma=0.05, models_per_batch=0)
SANE: dict[str, SaneConfig] = {
    **seeded("default", SaneConfig()),
    **seeded("recipe", SANE_RECIPE),
    **seeded("mean", dataclasses.replace(SANE_RECIPE, embedding="mean")),  # SANE's embedding: mean of all latents
    "whole": dataclasses.replace(SANE_RECIPE, window=64),  # the whole 48-token sequence in every window
    **seeded("gamma05", dataclasses.replace(SANE_RECIPE, gamma=0.5)),
    **seeded("gamma09", dataclasses.replace(SANE_RECIPE, gamma=0.9)),
    **seeded("gamma09_runs", dataclasses.replace(SANE_RECIPE, gamma=0.9, models_per_batch=4)),
    **seeded("runs", dataclasses.replace(SANE_RECIPE, models_per_batch=4)),
    **seeded("gamma05_runs", dataclasses.replace(SANE_RECIPE, gamma=0.5, models_per_batch=4)),
    # as many steps as whole runs on the hyperparameter zoo
    **seeded("gamma05_b32", dataclasses.replace(SANE_RECIPE, gamma=0.5, batch_size=32)),
    "nonoise": dataclasses.replace(SANE_RECIPE, noise=0.0),
    # a bias standardised apart from its weight
    **seeded("tensor", dataclasses.replace(SANE_RECIPE, normalisation="tensor")),
    **seeded("tensor_runs", dataclasses.replace(SANE_RECIPE, normalisation="tensor", models_per_batch=4)),
    **seeded("tensor_gamma05_runs",  # = the default
             dataclasses.replace(SANE_RECIPE, normalisation="tensor", gamma=0.5, models_per_batch=4)),
}

# Generators (R22: a hyper-representation trained for reconstruction, with layer-wise loss normalisation, on
# 5 consecutive late epochs per model): here epochs 11-15 of the seed zoo, latent 128, γ 0.05, 150 epochs.
GENERATOR = dataclasses.replace(V1, latent=128, gamma=0.05, epochs=150, models_per_batch=0, batch_size=32,
                                permutations=0)
LATE = tuple(range(11, 16))
SAMPLING: dict[str, SamplingConfig] = {
    "default": SamplingConfig(),
    "lwln": SamplingConfig(hyperrep=GENERATOR, epochs=LATE),
    "no_lwln": SamplingConfig(hyperrep=dataclasses.replace(GENERATOR, normalisation="none"), epochs=LATE),
    "permuted": SamplingConfig(hyperrep=dataclasses.replace(GENERATOR, permutations=1000), epochs=LATE),
    # the same generator on the --epochs-filter epochs (another zoo's late epochs, e.g. 796-800 of the long zoo)
    "lwln_filtered": SamplingConfig(hyperrep=GENERATOR),
    # and fine-tuned for 40 epochs: 5,040 digits steps ≈ one MNIST epoch (5,000 steps, R22's "after 1 epoch")
    "lwln_filtered_ft40": SamplingConfig(hyperrep=GENERATOR, finetune_epochs=40),
}


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


def scores(results: dict[str, Any], name: str) -> dict[str, dict[str, dict[str, float]]]:
    """{probe: {target: {"val": …, "test": …}}} of one baseline of a bench result."""
    probes = results["baselines"][name]["probes"]
    return {p: {t: {"val": r["val"], "test": r["test"]} for t, r in by.items()} for p, by in probes.items()}


def ablation(kind: str, args: argparse.Namespace) -> None:
    table = HYPERREP if kind == "hyperrep" else SANE
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for variant in args.variants.split(","):
        config = table[variant]
        results = run_bench(args.repo, args.config, [kind], device=args.device, epochs=parse_epochs(args.epochs_filter),
                            weight_threshold=args.weight_threshold, progress=False, **{kind: config})
        entry = results["baselines"][kind]
        record = {"kind": kind, "variant": variant, "config": dataclasses.asdict(config), "zoo": args.config,
                  "epochs": results["epochs"], "splits": results["splits"], "time_s": entry["time_s"],
                  "peak_rss_mb": entry["peak_rss_mb"], "scores": scores(results, kind),
                  "history": [entry["history"][0], entry["history"][-1]]}
        (out / f"{kind}_{variant}.json").write_text(json.dumps(record, indent=1, default=_json) + "\n")
        print(f"{kind} {variant}: {entry['time_s']:.0f} s", flush=True)
    print(ablation_table(out))


def sampling(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for variant in args.variants.split(","):
        config = SAMPLING[variant]
        start = time.perf_counter()
        results = run_bench(args.repo, args.config, ["sampling"], device=args.device,
                            epochs=parse_epochs(args.epochs_filter), weight_threshold=args.weight_threshold,
                            progress=False, sampling=config)
        record = {"variant": variant, **results["sampling"], "time_s": time.perf_counter() - start}
        (out / f"sampling_{variant}.json").write_text(json.dumps(record, indent=1, default=_json) + "\n")
        print(f"sampling {variant}: {record['time_s']:.0f} s", flush=True)
    print(ablation_table(out))


def ablation_table(out: Path) -> str:
    """Markdown tables of every ablation / sampling JSON in ``out`` (val / test per target, ridge probe)."""
    lines = []
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*_*.json"))]
    probe_records = [r for r in records if "scores" in r]
    if probe_records:
        targets = list(probe_records[0]["scores"]["ridge"])
        head = ["variant", "probe", *targets, "time s"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in probe_records:
            for probe in ("ridge", "ridge_std"):
                cells = [f"{r['scores'][probe][t]['val']:.3f} / {r['scores'][probe][t]['test']:.3f}"
                         if t in r["scores"][probe] else "—" for t in targets]
                lines.append(f"| {r['kind']} {r['variant']} | {probe} | " + " | ".join(cells)
                             + f" | {r['time_s']:.0f} |")
    for r in (r for r in records if "accuracy" in r):
        lines += ["", f"### sampling variant `{r['variant']}`", "", sampling_table(r)]
    return "\n".join(lines)


def sorted_units(weights: np.ndarray, spec: PermutationSpec) -> np.ndarray:
    """Every hidden layer's units sorted by the L2 norm of their incoming weights and bias, largest first
    (a canonical form; function-preserving)."""
    perms = []
    for group in spec.groups:
        norm = np.zeros((len(weights), group.size))
        for member in (m for m in group.members if m.axis == 0):
            e = member.entry
            norm += (weights[:, e.offset : e.offset + e.numel].reshape(len(weights), group.size, -1) ** 2).sum(2)
        perms.append(np.argsort(-norm, axis=1))
    return Permutation(spec, None).apply(weights, perms)


def seed_zoo_accuracy(source: ZooSource) -> Callable[[np.ndarray], float]:
    """Test accuracy of a flat weight vector [D] as a model of the seed zoo ``source`` (the activation and dropout
    that all its models share, read from its spec)."""
    info, data = source.info, load_image_data(source.info.zoo.data)
    run = info.zoo.models()[0]

    def accuracy(flat: np.ndarray) -> float:
        row = {WEIGHTS: torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float32)), "activation": run.activation,
               "dropout": run.dropout}
        return evaluate_row(row, info, data=data)[1]

    return accuracy


def mixing(args: argparse.Namespace) -> None:
    """Can coordinates of good models be recombined? Per-dimension KDE (B_KDE30) of the top-30 % training
    states' weights, standardised per coordinate, in the stored and in a norm-sorted canonical form, and
    the mean of those states; test accuracy of each. ``mean_norm_share``: ‖mean of the anchors‖ ÷ mean of their
    norms (1: every anchor the same vector; ≈ 0: independent zero-mean vectors)."""
    source = ZooSource(args.repo, args.config, parse_epochs(args.epochs_filter), args.weight_threshold)
    meta = source.metadata("train")
    rows = anchors(meta, 0.3)
    weights = source.weights("train", rows).numpy()
    accuracy = seed_zoo_accuracy(source)
    record: dict[str, Any] = {"zoo": args.config, "epochs": args.epochs_filter, "anchors": len(rows),
                              "anchor_acc": [accuracy(w) for w in weights[: args.samples]],
                              "mean_norm_share": float(np.linalg.norm(weights.mean(0))
                                                       / np.linalg.norm(weights, axis=1).mean())}
    forms = {"stored": weights, "sorted": sorted_units(weights, PermutationSpec.of(source.layout, "cnn"))}
    record["sorted_anchor_acc"] = [accuracy(w) for w in forms["sorted"][: args.samples]]
    for name, form in forms.items():
        mean, std = form.mean(0), form.std(0) + 1e-8
        record[f"{name}_mean_model_acc"] = accuracy(mean)
        for bandwidth in (0.002, 0.1):
            draws = kde_sample((form - mean) / std, args.samples, bandwidth, bounds=None) * std + mean
            record[f"{name}_kde_bw{bandwidth}_acc"] = [accuracy(w) for w in draws]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mixing.json").write_text(json.dumps(record, indent=1) + "\n")
    print({k: (round(float(np.mean(v)), 3) if isinstance(v, list) else v) for k, v in record.items()})


def copies(args: argparse.Namespace) -> None:
    """The scale of "a sample is a copy": relative distance (as ``sampling.nearest_checkpoints``: ‖a − b‖ ÷ ‖b‖)
    between epochs e and e + k of the same training model, and the test accuracy of the top-30 % anchors
    (``samples`` of them, drawn at random) with Gaussian noise of a given relative norm added (isotropic, or per
    tensor in proportion to its norm)."""
    source = ZooSource(args.repo, args.config, parse_epochs(args.epochs_filter), args.weight_threshold)
    meta = source.metadata("train")
    weights = source.weights("train", np.arange(len(meta["epoch"]))).double().numpy()
    row = {(int(m), int(e)): i for i, (m, e) in enumerate(zip(meta["model_id"], meta["epoch"], strict=True))}
    record: dict[str, Any] = {"zoo": args.config, "epochs": args.epochs_filter, "epoch_gap": {}}
    for gap in (1, 2, 4):
        rel = [np.linalg.norm(weights[row[m, e + gap]] - weights[i]) / np.linalg.norm(weights[i])
               for (m, e), i in row.items() if (m, e + gap) in row]
        if rel:
            record["epoch_gap"][gap] = {"median": float(np.median(rel)), "p10": float(np.quantile(rel, 0.1)),
                                        "p90": float(np.quantile(rel, 0.9)), "pairs": len(rel)}
    accuracy = seed_zoo_accuracy(source)
    rng = np.random.default_rng(0)
    top = anchors(meta, 0.3)
    chosen = weights[rng.choice(top, min(args.samples, len(top)), replace=False)]  # anchors of every rank
    tensors = [slice(e.offset, e.offset + e.numel) for e in source.layout.entries]

    record["anchor_acc"] = [accuracy(w) for w in chosen]
    record["noise"] = {}
    for scale in (0.05, 0.1, 0.23, 0.5):
        for kind in ("isotropic", "per_tensor"):
            accs = []
            for w in chosen:
                noise = rng.standard_normal(w.shape)
                if kind == "isotropic":
                    noise *= scale * np.linalg.norm(w) / np.linalg.norm(noise)
                else:
                    for t in tensors:
                        noise[t] *= scale * np.linalg.norm(w[t]) / np.linalg.norm(noise[t])
                accs.append(accuracy(w + noise))
            record["noise"][f"{kind} {scale}"] = accs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "copies.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({"epoch_gap": record["epoch_gap"], "anchor_acc": float(np.mean(record["anchor_acc"])),
                      **{k: f"{np.mean(v):.3f} ± {np.std(v):.3f}" for k, v in record["noise"].items()}}, indent=1))


def coverage(args: argparse.Namespace) -> None:
    """What of s(W) the hyper-representation's z holds: for every one of the 70 statistics, the test R² of a
    standardised ridge from z (λ on validation), and its median per statistic of weights / of biases (low:
    z does not hold that statistic linearly); and how much of a numeric target (``--target``, default test
    accuracy) the standardised ridge reads from z, from s(W), and from s(W) without each of those groups of
    statistics (which of them carry the signal)."""
    source = ZooSource(args.repo, args.config, parse_epochs(args.epochs_filter), args.weight_threshold)
    rep = train_hyperrep(source, HYPERREP[args.variant], progress=False)
    z, stats = {}, {}
    for split in SPLITS:
        z[split], _ = source.extract(split, rep.embed)
        stats[split], _ = source.extract(split, lambda w: layer_statistics(w, source.layout))
    names = stat_names(source.layout)
    r2 = {name: standardized_ridge_probe(z, {s: v[:, j] for s, v in stats.items()}).scores["test"]
          for j, name in enumerate(names)}
    groups: dict[str, list[int]] = {}
    for j, name in enumerate(names):
        tensor, stat = name.rsplit(".", 1)
        groups.setdefault(f"{tensor.rsplit('.', 1)[1]} {stat}", []).append(j)
    target = {s: np.asarray(m[args.target], dtype=float) for s, m in ((s, source.metadata(s)) for s in SPLITS)}

    def target_r2(x: dict[str, np.ndarray]) -> float:
        return standardized_ridge_probe(x, target).scores["test"]

    t = args.target
    record = {"zoo": args.config, "variant": args.variant, "epochs": args.epochs_filter, "target": t, "r2": r2,
              "median_by_group": {k: float(np.median([r2[names[j]] for j in v])) for k, v in groups.items()},
              f"{t}_from_z": target_r2(z), f"{t}_from_stats": target_r2(stats),
              f"{t}_from_stats_without": {k: target_r2({s: np.delete(x, v, axis=1) for s, x in stats.items()})
                                          for k, v in groups.items()}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.variant if t == "test_acc" else f"{args.variant}_{t}"
    (out / f"coverage_{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "r2"}, indent=1))


def constant(args: argparse.Namespace) -> None:
    """R² of predicting every numeric target by its training-split mean (no features) on validation and test:
    what a probe that reads nothing scores, after the same cleaning and epochs as the bench."""
    source = ZooSource(args.repo, args.config, parse_epochs(args.epochs_filter), args.weight_threshold)
    meta = {s: source.metadata(s) for s in SPLITS}
    record = {"zoo": args.config, "epochs": args.epochs_filter, "r2": {
        t: {s: r2_score(meta[s][t], np.full(len(meta[s][t]), np.mean(meta["train"][t]))) for s in SPLITS[1:]}
        for t in ("test_acc", "ggap", "epoch", "lr", "weight_decay", "dropout")}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "constant.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["r2"], indent=1))


def bench(args: argparse.Namespace) -> None:
    baselines = [b for b in args.baselines.split(",") if b]
    results = run_bench(args.repo, args.config, baselines, args.out, device=args.device,
                        epochs=parse_epochs(args.epochs_filter), weight_threshold=args.weight_threshold,
                        progress=False, hyperrep=HYPERREP[args.hyperrep], sane=SANE[args.sane],
                        sampling=SAMPLING[args.sampling])
    print(markdown(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("bench", "ablation", "sampling", "mixing", "copies", "coverage", "constant", "table"):
        p = sub.add_parser(name)
        if name == "ablation":
            p.add_argument("kind", choices=("hyperrep", "sane"))
        p.add_argument("--out", required=True)
        if name == "table":
            continue
        p.add_argument("--repo", required=True)
        p.add_argument("--config", required=True)
        p.add_argument("--epochs-filter", default=None)
        p.add_argument("--weight-threshold", default="5", type=parse_threshold)
        p.add_argument("--device", default="cpu")
        if name in ("mixing", "copies"):
            p.add_argument("--samples", type=int, default=10 if name == "mixing" else 20)
        elif name == "bench":
            p.add_argument("--baselines", default="stats,weights,hyperrep,sane")
            p.add_argument("--hyperrep", default="default", choices=sorted(HYPERREP))
            p.add_argument("--sane", default="default", choices=sorted(SANE))
            p.add_argument("--sampling", default="default", choices=sorted(SAMPLING))
        elif name == "coverage":
            p.add_argument("--variant", default="default", choices=sorted(HYPERREP))
            p.add_argument("--target", default="test_acc", help="a numeric metadata column")
        elif name not in ("mixing", "copies", "constant"):
            p.add_argument("--variants", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.command == "table":
        print(ablation_table(Path(args.out)))
    elif args.command == "ablation":
        ablation(args.kind, args)
    else:
        {"bench": bench, "sampling": sampling, "mixing": mixing, "copies": copies,
         "coverage": coverage, "constant": constant}[args.command](args)


if __name__ == "__main__":
    main()
