"""``modelzoos bench CONFIG --repo PATH_OR_HUB_ID``: train and evaluate weight-space baselines on one config."""

from __future__ import annotations

import argparse
from pathlib import Path

from modelzoos.cli import add_threads, parse_epochs, set_threads


def add_parser(sub) -> argparse.ArgumentParser:
    c = sub.add_parser("bench", help="train and evaluate weight-space baselines on one published config")
    c.add_argument("config", help="config (zoo) name in the repository, e.g. digits_cnn_seed")
    c.add_argument("--repo", required=True, help="dataset repository folder or Hub id ORG/NAME")
    c.add_argument("--baselines", default="stats,weights,hyperrep",
                   help="comma list of stats, weights, hyperrep, sane, sampling (default: %(default)s)")
    c.add_argument("--out", default=None, help="folder for results.md, results.json and bench.png")
    c.add_argument("--epochs-filter", default=None,
                   help="epochs used as samples, e.g. '5,10,15' or '1-15' (default: every stored epoch)")
    c.add_argument("--weight-threshold", default="5",
                   help="drop states with any |w| above this, as the original loader did; 'off' keeps them "
                        "(non-finite states are always dropped; default: %(default)s)")
    c.add_argument("--device", default="cpu", help="torch device for training and probes: cpu, cuda, ...")
    c.add_argument("--streaming", action="store_true", help="stream the Parquet files instead of the Arrow cache")
    c.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: %(default)s)")
    add_threads(c)
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    return c


def run(args: argparse.Namespace) -> int:
    from modelzoos.baselines.bench import BASELINES, markdown, run_bench
    from modelzoos.baselines.data import parse_threshold
    from modelzoos.repository import config_info
    from modelzoos.training import check_device

    # every argument is checked before any work: a mistake costs seconds, not a training run
    set_threads(args.threads)
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown or not baselines:
        raise ValueError(f"--baselines: unknown {unknown or 'empty list'}; valid: {', '.join(BASELINES)}")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file; bench writes results.md, results.json and bench.png into a "
                         "folder: choose a folder")
    check_device(args.device)
    epochs = parse_epochs(args.epochs_filter)
    threshold = parse_threshold(args.weight_threshold)
    config_info(args.repo, args.config)  # the repository and the config exist (the error lists the configs)
    results = run_bench(args.repo, args.config, baselines,
                        args.out, device=args.device, epochs=epochs, weight_threshold=threshold,
                        streaming=args.streaming, workers=args.workers, progress=not args.quiet)
    print(markdown(results))
    if args.out:
        print(f"\nwrote {Path(args.out) / 'results.md'}, results.json, bench.png")
    return 0
