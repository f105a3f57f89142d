"""``modelzoos compare A B [--out DIR]``: are two zoos of one spec the same population? (docs/compare.md)"""

from __future__ import annotations

import argparse

from modelzoos.cli import parse_epochs


def add_parser(sub) -> argparse.ArgumentParser:
    c = sub.add_parser("compare", help="compare two zoos of one spec side by side: distributions, tests, verdicts",
                       description="Compare zoo A with zoo B epoch by epoch: distributions of the metrics and of "
                                   "per-layer weight statistics, KS / Fisher / paired tests with Holm's correction, "
                                   "and a verdict per statistic (same, differs, too few models to tell). Sides are "
                                   "zoo directories (positional) and published configs (--repo/--config), zoo "
                                   "directories first; differences are B − A.")
    c.add_argument("zoo_dirs", nargs="*", metavar="ZOO_DIR", help="zoo directories (`modelzoos generate --out`)")
    c.add_argument("--repo", action="append", default=[],
                   help="dataset repository folder or Hub id ORG/NAME of a published side (once for all "
                        "--config, or once per --config)")
    c.add_argument("--config", action="append", default=[], help="config (zoo) name of a published side")
    c.add_argument("--out", default=None, help="folder for report.md, report.json and compare.png")
    c.add_argument("--allow-spec-diff", action="store_true",
                   help="compare zoos of different specs (the differences head the report)")
    c.add_argument("--epochs", default=None,
                   help="compare only these epochs, e.g. '0,5,10' or '1-15' (default: every epoch both hold)")
    c.add_argument("--no-weights", action="store_true", help="metrics only: read no weights")
    c.add_argument("--alpha", type=float, default=None,
                   help="family-wise error rate of all tests together (default: 0.05)")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    return c


def sides(args: argparse.Namespace) -> list:
    """The two sides: zoo directories first, then the (repo, config) pairs."""
    from modelzoos.compare import ConfigSide, ZooDirSide

    repos, configs = args.repo, args.config
    if len(repos) == 1:
        repos = repos * len(configs)
    if len(repos) != len(configs):
        raise ValueError(f"give one --repo for all --config or one per --config (got {len(args.repo)} --repo, "
                         f"{len(configs)} --config)")
    out = [ZooDirSide(p) for p in args.zoo_dirs] + [ConfigSide(r, c) for r, c in zip(repos, configs, strict=True)]
    if len(out) != 2:
        raise ValueError(f"compare needs two sides (zoo directories and --repo/--config pairs), got {len(out)}")
    return out


def run(args: argparse.Namespace) -> int:
    from modelzoos.compare import ALPHA, compare, markdown, write_report

    a, b = sides(args)
    result = compare(a, b, allow_spec_diff=args.allow_spec_diff, epochs=parse_epochs(args.epochs),
                     weights=not args.no_weights, alpha=ALPHA if args.alpha is None else args.alpha,
                     progress=not args.quiet)
    print(markdown(result), end="")
    if args.out:
        paths = write_report(result, args.out)
        print(f"\nwrote {', '.join(str(p) for p in paths)}")
    return 0
