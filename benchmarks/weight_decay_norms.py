"""What weight decay does to the weights of a hyperparameter zoo whose grid is a full factorial (as
``digits_cnn_hyp_lr10``: every configuration once with each weight decay): per epoch, the mean difference in
log weight norm between the two weight decays of otherwise identical configurations (paired), against the
spread of that norm within a pair and over all models; and the same difference in test accuracy. All splits
of a built config, through the baselines' own reader and cleaning (``ZooSource``, default |w| > 5 rule).

    python benchmarks/weight_decay_norms.py --repo runs/hub_hyp --config digits_cnn_hyp_lr10 --epochs 0,10,30 \\
        --out FILE.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelzoos.baselines.data import ZooSource
from modelzoos.repository import SPLITS

OTHERS = ["optimizer", "lr", "init", "activation", "dropout"]  # what pairs two models besides weight decay


def _sem(values: list[float]) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


def states(repo: str, config: str, epochs: tuple[int, ...]) -> pd.DataFrame:
    """Metadata and log weight norm of every kept state of ``epochs``, all splits (one pass each)."""
    source = ZooSource(repo, config, epochs)
    parts = []
    for split in SPLITS:
        norms, meta = source.extract(split, lambda w: w.double().norm(dim=1, keepdim=True))
        parts.append(pd.DataFrame(meta).assign(log_norm=np.log(norms[:, 0])))
    return pd.concat(parts, ignore_index=True)


def weight_decay_effect(m: pd.DataFrame, config: str) -> dict[str, Any]:
    """Paired effect of the smaller vs the larger weight decay among the states ``m`` of one epoch (log norm,
    test accuracy)."""
    decays = sorted(m["weight_decay"].unique())
    if len(decays) != 2:
        raise ValueError(f"{config} has weight decays {decays}; this measurement pairs exactly two")
    low, high = decays
    norm_diff, acc_diff, pair_std = [], [], []
    for _, pair in m.groupby(OTHERS):
        small, large = pair[pair.weight_decay == low], pair[pair.weight_decay == high]
        if len(small) and len(large):
            norm_diff.append(small.log_norm.mean() - large.log_norm.mean())
            acc_diff.append(small.test_acc.mean() - large.test_acc.mean())
            pair_std.append(pair.log_norm.std())
    return {"epoch": int(m["epoch"].iloc[0]), "weight_decays": [float(low), float(high)], "pairs": len(norm_diff),
            "log_norm_diff": float(np.mean(norm_diff)), "log_norm_diff_sem": _sem(norm_diff),
            "log_norm_std_within_pair_median": float(np.median(pair_std)),
            "log_norm_std_all_models": float(m.log_norm.std()),
            "test_acc_diff": float(np.mean(acc_diff)), "test_acc_diff_sem": _sem(acc_diff)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--epochs", default="0,10,30")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    epochs = tuple(int(e) for e in args.epochs.split(","))
    m = states(args.repo, args.config, epochs)
    records = [weight_decay_effect(m[m["epoch"] == e], args.config) for e in epochs]
    Path(args.out).write_text(json.dumps({"zoo": args.config, "by_epoch": records}, indent=1) + "\n")
    for r in records:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
