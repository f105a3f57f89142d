"""What weight decay does to the weights of a hyperparameter zoo whose grid is a full factorial (as
``digits_cnn_hyp_lr10``: every configuration once with each weight decay): per epoch, the mean difference in
log weight norm between the two weight decays of otherwise identical configurations (paired), against the
spread of that norm within one configuration's pair and over all models; and the same difference in test
accuracy. States with non-finite weights or |w| above the bench's threshold (5) are left out.

    python benchmarks/weight_decay_norms.py ZOO_DIR --epochs 0,10,30 --out FILE.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from modelzoos.export import ZooDir

OTHERS = ["optimizer", "lr", "init", "activation", "dropout"]  # what pairs two models besides weight decay


def weight_decay_effect(zoo: ZooDir, epoch: int, threshold: float = 5.0) -> dict[str, float]:
    """Paired effect of the smaller vs the larger weight decay at one epoch (log norm, test accuracy)."""
    meta = zoo.metadata
    rows = np.flatnonzero((meta["epoch"] == epoch).to_numpy())
    weights = np.zeros((len(rows), zoo.layout.size), np.float32)
    zoo.read_rows(rows, weights)
    kept = np.isfinite(weights).all(1) & (np.abs(weights).max(1) <= threshold)
    m = meta.iloc[rows][kept].assign(lognorm=np.log(np.linalg.norm(weights[kept].astype(np.float64), axis=1)))
    low, high = sorted(m["weight_decay"].unique())
    norm_diff, acc_diff, pair_std = [], [], []
    for _, pair in m.groupby(OTHERS):
        small, large = pair[pair.weight_decay == low], pair[pair.weight_decay == high]
        if len(small) and len(large):
            norm_diff.append(small.lognorm.mean() - large.lognorm.mean())
            acc_diff.append(small.test_acc.mean() - large.test_acc.mean())
            pair_std.append(pair.lognorm.std())
    sem = lambda x: float(np.std(x) / np.sqrt(len(x)))  # noqa: E731
    return {"epoch": epoch, "weight_decays": [float(low), float(high)], "pairs": len(norm_diff),
            "log_norm_diff": float(np.mean(norm_diff)), "log_norm_diff_sem": sem(norm_diff),
            "log_norm_std_within_pair_median": float(np.median(pair_std)),
            "log_norm_std_all_models": float(m.lognorm.std()),
            "test_acc_diff": float(np.mean(acc_diff)), "test_acc_diff_sem": sem(acc_diff)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("zoo")
    parser.add_argument("--epochs", default="0,10,30")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    zoo = ZooDir(args.zoo)
    records = [weight_decay_effect(zoo, int(e)) for e in args.epochs.split(",")]
    Path(args.out).write_text(json.dumps({"zoo": zoo.zoo.name, "by_epoch": records}, indent=1) + "\n")
    for r in records:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
