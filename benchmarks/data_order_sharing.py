"""How much same-seed models' results correlate, with the original's data-order sharing and with one order per seed.

    python benchmarks/data_order_sharing.py --seeds 4 --epochs 4 --threads 1 --out RESULTS.json
    python benchmarks/data_order_sharing.py --analyse RESULTS.json     # recompute the statistics only

Trains the full grid (256 configurations) of ``digits_cnn_hyp_fix`` for the first seeds with the population
engine, twice:

- ``original``: the default keys, ``randomness.model_key``: models of one seed share a data order (and dropout
  mask draws) only while they consumed the original's global RNG equally (same init class U/KU or N/KN; dropout
  0 vs > 0 apart from epoch 2), as in the original zoos;
- ``per_seed``: every model keyed by its seed alone, i.e. all 256 configurations of a seed share every epoch's
  order (the behaviour of modelzoos before the change; lane-0 keys hash exactly as the plain seed did).

Statistic: for two configurations c, c' the Pearson correlation, across the seeds s, of the final test
accuracies acc[s, c] and acc[s, c'], averaged over all pairs of a kind (pairs with a constant accuracy
across seeds are left out). Kinds follow the original's sharing: ``same_lane`` (same init class and both
dropout 0 or both > 0: one order in every epoch), ``dropout_apart`` (same init class, dropout 0 vs > 0: same
order in epoch 1 only), ``init_apart`` (U/KU vs N/KN: never the same order after init). ``other_seed`` pairs
acc[s, c] with acc[s + 1, c'] (no shared randomness; with few seeds it sits below 0 when seeds have a common
effect). Also over the ``learned`` configurations only (mean final accuracy ≥ 0.5 in both runs), and for the
difference original − per_seed a 95 % interval over ``BOOTSTRAP`` random subsets of the configurations (drawn
with replacement, duplicates dropped), which shows the spread from the choice of configurations, not from the
choice of seeds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from modelzoos import randomness
from modelzoos.catalogue import get_zoo
from modelzoos.data import load_image_data
from modelzoos.population import train_population

ZOO = "digits_cnn_hyp_fix"
BOOTSTRAP = 300  # configuration subsets for the intervals


def final_test_acc(seeds: int, epochs: int, mode: str) -> np.ndarray:
    """Test accuracies [seeds, configurations] after ``epochs`` epochs; one population chunk per seed."""
    zoo = get_zoo(ZOO)
    data = load_image_data(zoo.data)
    models = zoo.models()
    per_seed = len(models) // zoo.replicates
    model_key = randomness.model_key
    if mode == "per_seed":
        randomness.model_key = lambda seed, init, dropout, epoch: seed
    try:
        acc = np.empty((seeds, per_seed))
        for s in range(seeds):
            start = time.perf_counter()
            *_, last = train_population(zoo, models[s * per_seed:(s + 1) * per_seed], data, stop=epochs)
            acc[s] = last.metrics["test_acc"]
            print(f"{mode}: seed {s + 1} done in {time.perf_counter() - start:.0f} s", flush=True)
    finally:
        randomness.model_key = model_key
    return acc


def pair_kinds(configs) -> dict[str, list[tuple[int, int]]]:
    """Configuration pairs by how the original shared their data order within a seed."""
    kinds: dict[str, list[tuple[int, int]]] = {"same_lane": [], "dropout_apart": [], "init_apart": []}
    for (i, a), (j, b) in itertools.combinations(enumerate(configs), 2):
        if randomness.INIT_LANE[a.init] != randomness.INIT_LANE[b.init]:
            kinds["init_apart"].append((i, j))
        elif (a.dropout > 0) != (b.dropout > 0):
            kinds["dropout_apart"].append((i, j))
        else:
            kinds["same_lane"].append((i, j))
    return kinds


def mean_pair_correlation(x: np.ndarray, y: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    """Mean over pairs (c, c') of Pearson r(x[:, c], y[:, c']) across seeds; pairs with a constant column left out."""
    i, j = np.array(pairs).T
    a, b = x[:, i] - x[:, i].mean(0), y[:, j] - y[:, j].mean(0)
    denom = np.sqrt((a**2).sum(0) * (b**2).sum(0))
    ok = denom > 0
    return float(((a * b).sum(0)[ok] / denom[ok]).mean())


def analyse(acc: dict[str, np.ndarray], configs, bootstrap: int = BOOTSTRAP) -> dict:
    """Mean pair correlations per run and kind (all and learned configurations) and bootstrap intervals."""
    kinds = pair_kinds(configs)
    learned = np.logical_and.reduce([a.mean(0) >= 0.5 for a in acc.values()])

    def stats(a: np.ndarray, keep: np.ndarray) -> dict[str, float]:
        kept = {k: [(i, j) for i, j in ps if keep[i] and keep[j]] for k, ps in kinds.items()}
        out = {k: mean_pair_correlation(a, a, ps) for k, ps in kept.items()}
        every = [p for ps in kept.values() for p in ps]
        return out | {"other_seed": mean_pair_correlation(a, np.roll(a, -1, axis=0), every)}

    everything = np.ones(len(configs), dtype=bool)
    out = {"learned_configurations": int(learned.sum()),
           "runs": {m: {"mean_test_acc": float(a.mean()), "all": stats(a, everything), "learned": stats(a, learned)}
                    for m, a in acc.items()}}
    rng = np.random.default_rng(0)
    diffs = {k: [] for k in kinds}
    for _ in range(bootstrap):
        keep = np.zeros(len(configs), dtype=bool)
        keep[rng.integers(0, len(configs), len(configs))] = True
        for k, ps in kinds.items():
            sub = [(i, j) for i, j in ps if keep[i] and keep[j]]
            diffs[k].append(mean_pair_correlation(acc["original"], acc["original"], sub)
                            - mean_pair_correlation(acc["per_seed"], acc["per_seed"], sub))
    out["original_minus_per_seed"] = {k: {"all": out["runs"]["original"]["all"][k] - out["runs"]["per_seed"]["all"][k],
                                          "interval_95": np.percentile(d, [2.5, 97.5]).tolist()}
                                      for k, d in diffs.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=4, help="seeds 1..S of the zoo's 10")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    parser.add_argument("--analyse", type=Path, default=None, help="recompute the statistics of a results JSON")
    args = parser.parse_args()
    zoo = get_zoo(ZOO)
    configs = zoo.models()[: len(zoo.models()) // zoo.replicates]
    if args.analyse:
        results = json.loads(args.analyse.read_text())
        args.out = args.out or args.analyse
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        results = {"zoo": ZOO, "seeds": args.seeds, "epochs": args.epochs, "configurations": len(configs),
                   "engine": "population", "threads": torch.get_num_threads(), "torch": torch.__version__,
                   "machine": platform.processor() or platform.machine(), "modes": {}}
        for mode in ("original", "per_seed"):
            start = time.perf_counter()
            acc = final_test_acc(args.seeds, args.epochs, mode)
            results["modes"][mode] = {"seconds": time.perf_counter() - start, "final_test_acc": acc.tolist()}
    results["analysis"] = analyse({m: np.array(r["final_test_acc"]) for m, r in results["modes"].items()}, configs)
    print(json.dumps(results["analysis"], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
