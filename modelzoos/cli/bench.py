"""``modelzoos bench CONFIG --repo PATH_OR_HUB_ID``: train and evaluate weight-space baselines on one config."""

from __future__ import annotations

import argparse
from pathlib import Path


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
    c.add_argument("--threads", type=int, default=None,
                   help="torch intra-op CPU threads (default: torch's; 1 is fastest for CNN zoos on a busy CPU)")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    return c


def run(args: argparse.Namespace) -> int:
    import torch

    from modelzoos.baselines.bench import markdown, run_bench
    from modelzoos.baselines.data import parse_epochs, parse_threshold

    if args.threads:
        torch.set_num_threads(args.threads)
    results = run_bench(args.repo, args.config, [b.strip() for b in args.baselines.split(",") if b.strip()],
                        args.out, device=args.device, epochs=parse_epochs(args.epochs_filter),
                        weight_threshold=parse_threshold(args.weight_threshold),
                        streaming=args.streaming, workers=args.workers, progress=not args.quiet)
    print(markdown(results))
    if args.out:
        print(f"\nwrote {Path(args.out) / 'results.md'}, results.json, bench.png")
    return 0
