"""``modelzoos import SOURCE... --zoo ZOO --out DIR``: the authors' released models as a zoo directory."""

from __future__ import annotations

import argparse
import json

from modelzoos.cli import human_size, parse_epochs

SHOWN = 10  # problems and missing states listed before "… and N more"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("import", help="convert the original release's files (folders, zips, tars) into a zoo "
                                      "directory (resumable)",
                       description="Read the authors' released trials of one zoo in place (experiment folders, or "
                                   "the .zip / .tar / .tar.gz as downloaded; a zoo spread over parts takes every "
                                   "part), match each trial to a model of the spec by its params.json and write "
                                   "the zoo directory. docs/import.md describes the rules and the result.")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="experiment folder or release archive")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--zoo", help="catalogue zoo name or spec file the trials belong to (e.g. mnist_cnn_seed)")
    what.add_argument("--twins-of", metavar="DIR",
                      help="import the released variational-dropout twins of this imported zoo directory")
    p.add_argument("--out", required=True, help="zoo directory to write (rerun to resume)")
    p.add_argument("--epochs", default=None,
                   help="epochs to keep: a list and/or ranges, e.g. 50, 0,25,50 or 0-10,50 (default: all)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes reading chunks in parallel (folders, zips and plain tars; default 1)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="models per chunk (default: what fits 256 MB of memory per chunk)")
    p.add_argument("--experiment", default=None,
                   help="experiment folder holding the trials (default: the zoo's `source`)")
    p.add_argument("--source-url", default=None, help="record (URL or DOI) the files came from (default: the "
                                                       "zoo's record of the release, where known)")
    p.add_argument("--optimizer-state", action="store_true",
                   help="also keep every state's optimizer file (Adam moments, SGD momentum) in the epoch files, as "
                        "`generate --optimizer-state` does (docs/format.md); default: weights only; not with "
                        "--twins-of")
    p.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _listed(lines: list[str]) -> list[str]:
    more = [f"  … and {len(lines) - SHOWN} more (--json lists all)"] if len(lines) > SHOWN else []
    return [f"  {line}" for line in lines[:SHOWN]] + more


def run(args: argparse.Namespace) -> int:
    from modelzoos.catalogue import get_zoo
    from modelzoos.importing import import_twins, import_zoo

    options = {"epochs": parse_epochs(args.epochs), "experiment": args.experiment,
               "source_url": args.source_url, "workers": args.workers, "chunk_size": args.chunk_size,
               "progress": not args.quiet}
    if args.zoo is not None:
        s = import_zoo(args.sources, get_zoo(args.zoo), args.out, optimizer_state=args.optimizer_state, **options)
    elif args.optimizer_state:
        raise ValueError("--optimizer-state keeps the optimizer files of a zoo's trials; the twins' (with log σ²) "
                         "are not imported: drop --optimizer-state with --twins-of")
    else:
        s = import_twins(args.sources, args.twins_of, args.out, **options)
    if args.json:
        print(json.dumps(s.to_json(), indent=2))
        return 0
    zd = s.zoo_dir
    rate = f"{s.checkpoints / s.seconds:,.0f} checkpoints/s" if s.seconds > 0 else "nothing left to read"
    print(f"imported {zd.zoo.name} into {zd.path}: {s.models:,} of the spec's {s.spec_models:,} models, "
          f"{s.states:,} of {s.expected_states:,} states ({human_size(s.megabytes * 1e6)} of checkpoints, "
          f"{s.seconds:.1f} s, {rate})")
    for layout, counts in s.index_layouts.items():
        print(f"checkpoint module indices {layout}: " + ", ".join(f"{n:,} trials with {d}" for d, n in counts.items()))
    if s.missing_models:
        print(f"models the release lacks ({len(s.missing_models):,}): "
              f"{', '.join(map(str, s.missing_models[:SHOWN]))}{' …' if len(s.missing_models) > SHOWN else ''}")
    if s.missing_states:
        print(f"states missing from imported models ({len(s.missing_states):,}):")
        print("\n".join(_listed([f"model {m} epoch {e}: {why}" for m, e, why in s.missing_states])))
    if s.nonfinite_states:
        print(f"diverged (NaN or ±inf weights, column nonfinite): {s.nonfinite_states:,} states of "
              f"{len(s.nonfinite_models):,} models")
    if s.problems:
        print(f"problems ({len(s.problems):,}):")
        print("\n".join(_listed(s.problems)))
    return 0
