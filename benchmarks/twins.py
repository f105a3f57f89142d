"""Sparsified twins of the digits seed zoo: sparsity against accuracy over the 25 epochs, VD and MP.

Usage::

    python benchmarks/twins.py --out runs/twins_digits            # 100 models, CPU
    python benchmarks/twins.py --out runs/twins_digits --models 20 --device cuda

Steps (each resumable; a finished step is skipped, so a rerun only redraws the figure):

1. ``export.generate``: the digits seed zoo (``digits_cnn_seed``), ``--models`` models × 50 epochs with the
   population engine → ``OUT/source``.
2. ``twins.sparsify``: every final model, 25 epochs of variational dropout → ``OUT/vd`` and of magnitude
   pruning → ``OUT/mp`` (methods and settings: ``modelzoos/twins.py``).
3. ``OUT/twins_digits.png``: (a) test accuracy against sparsity, the median across models at every epoch
   0..25 with quartile bars; (b) sparsity and (c) test accuracy per epoch, median and interquartile band.
   ``OUT/twins_digits.json``: the same quartiles per epoch and method, the epoch-25 table (sparsity, test
   accuracy, its drop from the dense epoch-0 model; median and quartiles) and the timings of the steps
   that ran (wall and CPU seconds, per model).

Reference: the original MNIST twins (README, ``assets/MNIST_Sparse_Twin.png``) reach a median sparsity of
≈ 0.78 at ≈ 2 % test accuracy loss after 25 VD epochs; MNIST gives 5,000 optimizer steps per epoch,
digits 126 (batch 10 on 1,257 training images).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib
import torch
from safetensors import safe_open

from modelzoos.catalogue import TWIN_EPOCHS, get_zoo
from modelzoos.export import ZooDir
from modelzoos.generate import generate
from modelzoos.twins import sparsify, summary

ZOO = "digits_cnn_seed"
SOURCE_EPOCHS = 50
METHODS = {"vd": ("variational dropout", "tab:blue"), "mp": ("magnitude pruning", "tab:orange")}


def states_written(path: Path) -> int:
    """Model states in the epoch files under ``path`` (rows of their ``weights`` tensors)."""
    total = 0
    for f in path.glob("weights/*/epoch_*.safetensors"):
        with safe_open(str(f), framework="pt") as st:
            total += st.get_slice("weights").get_shape()[0]
    return total


def timed(step: str, timings: dict, out: Path, models: int, epochs: int, fn):
    """Run ``fn``; add its wall and CPU seconds and the states it trained to ``timings[step]``.

    A resumed step adds to the seconds and states of the earlier runs; epoch-0 states (evaluation only)
    are not counted as trained. ``s_per_model`` extrapolates the rate to all ``epochs`` epochs of one model.
    """
    before = states_written(out)
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    trained = states_written(out) - before - (models if before == 0 else 0)
    if trained > 0:
        t = timings.setdefault(step, {"wall_s": 0.0, "cpu_s": 0.0, "model_epochs": 0})
        t["wall_s"] += wall
        t["cpu_s"] += cpu
        t["model_epochs"] += trained
        t["threads"] = torch.get_num_threads()
        t["wall_s_per_model"] = t["wall_s"] / t["model_epochs"] * epochs
    return result


def plot(stats: dict[str, dict[int, dict]], path: Path, models: int) -> None:
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for method, per_epoch in stats.items():
        label, color = METHODS[method]
        epochs = sorted(per_epoch)
        q = {c: [[per_epoch[e][c][i] for e in epochs] for i in range(3)] for c in ("sparsity", "test_acc")}
        (sp_lo, sp, sp_hi), (ac_lo, ac, ac_hi) = q["sparsity"], q["test_acc"]
        ax = axes[0]
        ax.errorbar(sp, ac, xerr=[[m - lo for m, lo in zip(sp, sp_lo, strict=True)],
                                  [hi - m for m, hi in zip(sp, sp_hi, strict=True)]],
                    yerr=[[m - lo for m, lo in zip(ac, ac_lo, strict=True)],
                          [hi - m for m, hi in zip(ac, ac_hi, strict=True)]],
                    fmt="o-", ms=3, lw=1, elinewidth=0.6, color=color, label=label)
        ax.annotate(f"{epochs[-1]}", (sp[-1], ac[-1]), textcoords="offset points", xytext=(4, 4), color=color)
        for ax, (lo, mid, hi) in ((axes[1], q["sparsity"]), (axes[2], q["test_acc"])):
            ax.plot(epochs, mid, color=color, label=f"{label} (median)")
            ax.fill_between(epochs, lo, hi, color=color, alpha=0.25, lw=0)
    axes[0].set(xlabel="sparsity (fraction of conv + linear weights zeroed)", ylabel="test accuracy",
                title="(a) accuracy against sparsity, epochs 0..25")
    axes[1].set(xlabel="twin epoch", ylabel="sparsity", title="(b) sparsity: median, 25–75 %")
    axes[2].set(xlabel="twin epoch", ylabel="test accuracy", title="(c) test accuracy: median, 25–75 %")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Sparsified twins of {ZOO}: {models} models (CNN-s, dense models after {SOURCE_EPOCHS} epochs)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for source/, vd/, mp/, the PNG and the JSON")
    p.add_argument("--models", type=int, default=100, help="models of the digits seed zoo (default 100)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "twins_digits.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    timings = report.get("timings", {})

    source = timed("source", timings, out / "source", args.models, SOURCE_EPOCHS, lambda: generate(
        get_zoo(ZOO), out / "source", models=args.models, epochs=SOURCE_EPOCHS, device=args.device))
    stats, table = {}, {}
    for method in METHODS:
        twin = timed(method, timings, out / method, args.models, TWIN_EPOCHS,
                     lambda m=method: sparsify(source, out / m, m, device=args.device))
        stats[method] = summary(twin)
        table[method] = stats[method][max(stats[method])]
        report = {"zoo": ZOO, "models": args.models, "source_test_acc": ZooDir(out / "source").summary()["test_acc"],
                  "epoch_25": table, "per_epoch": stats, "timings": timings}
        report_path.write_text(json.dumps(report, indent=2) + "\n")
    plot(stats, out / "twins_digits.png", args.models)
    for method, q in table.items():
        t = timings.get(method, {})
        print(f"{method}: sparsity {q['sparsity'][1]:.3f} [{q['sparsity'][0]:.3f}, {q['sparsity'][2]:.3f}]  "
              f"test acc {q['test_acc'][1]:.3f}  drop {q['acc_drop'][1]:.3f} [{q['acc_drop'][0]:.3f}, "
              f"{q['acc_drop'][2]:.3f}]  {t.get('wall_s_per_model', float('nan')):.1f} s/model")
    print(f"figure {out / 'twins_digits.png'}, numbers {report_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
