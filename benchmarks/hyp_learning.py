"""How many models of a zoo learn: per epoch, the share of models above 50 % test accuracy and the median,
mean and standard deviation of test accuracy, overall and (share) per hyperparameter value.

Reads the epoch files of a zoo directory (finished or still being generated), so it can follow a run::

    python benchmarks/hyp_learning.py runs/hyp benchmarks/digits_cnn_hyp_lr10.toml \\
        --out benchmarks/results/digits_cnn_hyp_lr10_learning.json
    python benchmarks/hyp_learning.py runs/u_long benchmarks/digits_cnn_seed_u_long.toml \\
        --epochs 0,50,100,200,300,400,500,600,700,800 \\
        --out benchmarks/results/bench_digits_sampling_u_long/learning.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from safetensors import safe_open

from modelzoos.catalogue import get_zoo

EPOCHS = (0, 1, 3, 5, 10, 15, 20, 25, 30, 40, 50)  # reported, and the last stored epoch
HYPERPARAMETERS = ("lr", "optimizer", "init", "activation", "dropout", "weight_decay")


def learning(zoo_dir: Path, spec: str, epochs: tuple[int, ...] = EPOCHS) -> dict[int, dict]:
    models = get_zoo(spec).models()
    per_epoch: dict[int, tuple[list[int], np.ndarray]] = defaultdict(lambda: ([], np.empty(0)))
    for path in sorted(zoo_dir.glob("weights/*/epoch_*.safetensors")):
        with safe_open(path, "pt") as f:
            meta = f.metadata()
        ids, acc = per_epoch[int(meta["epoch"])]
        per_epoch[int(meta["epoch"])] = (ids + json.loads(meta["model_ids"]),
                                         np.concatenate([acc, json.loads(meta["metrics"])["test_acc"]]))
    last = max(per_epoch)
    out = {}
    for epoch in sorted(e for e in per_epoch if e in epochs or e == last):
        ids, acc = per_epoch[epoch]
        learned = acc > 0.5
        by = {}
        for key in HYPERPARAMETERS:
            groups = defaultdict(list)
            for i, ok in zip(ids, learned, strict=True):
                groups[str(getattr(models[i], key))].append(ok)
            by[key] = {value: round(float(np.mean(v)), 3) for value, v in sorted(groups.items())}
        out[epoch] = {"models": len(ids), "median_test_acc": round(float(np.nanmedian(acc)), 3),
                      "mean_test_acc": round(float(np.nanmean(acc)), 3),
                      "std_test_acc": round(float(np.nanstd(acc)), 3),
                      "share_above_0.5": round(float(np.mean(learned)), 3), "nonfinite": int(np.isnan(acc).sum()),
                      "share_above_0.5_by": by}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("zoo_dir", type=Path)
    parser.add_argument("spec", help="the zoo's catalogue name or .toml spec (for the hyperparameters of each model)")
    parser.add_argument("--epochs", default=",".join(map(str, EPOCHS)), help="epochs reported (and the last stored)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = learning(args.zoo_dir, args.spec, tuple(int(e) for e in args.epochs.split(",")))
    for epoch, r in result.items():
        print(f"epoch {epoch}: {r['models']} models, median test acc {r['median_test_acc']:.3f}, "
              f"{100 * r['share_above_0.5']:.0f} % above 0.5; by lr {r['share_above_0.5_by']['lr']}, "
              f"init {r['share_above_0.5_by']['init']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
