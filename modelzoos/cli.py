"""The ``modelzoos`` command line.

``zoos`` (the catalogue), ``generate`` (train a zoo into a directory), ``twins`` (sparsify a trained zoo),
``build`` (zoo directories → a Hugging Face dataset repository folder), ``push`` (publish that folder on the
Hub), ``bench`` (weight-space baselines on a published config).
"""

from __future__ import annotations

import argparse
import json
import sys

from modelzoos import catalogue


def _table(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_zoos(args: argparse.Namespace) -> int:
    zoos = catalogue.list_zoos(args.pattern)
    if args.json:
        print(json.dumps([z.summary() for z in zoos], indent=2))
        return 0
    head = ["name", "dataset", "architecture", "config", "models", "epochs", "states", "twin states", "parameters",
            "input"]
    rows = [head] + [
        [z.name, z.dataset, z.architecture, z.config, f"{z.num_models:,}", str(z.epochs), f"{z.states:,}",
         f"{z.twin_states:,}", f"{z.parameters:,}", "×".join(map(str, (z.in_channels, z.data.size, z.data.size)))]
        for z in zoos
    ]
    print(_table(rows, right={4, 5, 6, 7, 8}))
    published = [z for z in zoos if z.dataset != "digits"]
    if published:
        t = catalogue.totals(published)
        print(f"\npublished zoos listed: {t['zoos']}, models {t['models']:,}, states {t['states']:,} "
              f"(ResNet-18 epoch 0 stored but not counted), with 25-epoch sparsified twins {t['states_with_twins']:,}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from modelzoos.export import generate

    zoo = catalogue.get_zoo(args.zoo)
    result = generate(zoo, args.out, models=args.models, epochs=args.epochs, engine=args.engine, device=args.device,
                      data_root=args.data_root, download=args.download, chunk_size=args.chunk_size,
                      progress=not args.quiet, backend=args.backend, ray_address=args.ray_address)
    s = result.summary()
    acc = s["test_acc"]
    print(f"zoo {s['zoo']}: {s['models']} models, {s['states']} states in {s['path']}")
    print(f"test accuracy at epoch {s['last_epoch']}: min {acc['min']:.3f}  25% {acc['p25']:.3f}  "
          f"median {acc['median']:.3f}  75% {acc['p75']:.3f}  max {acc['max']:.3f}")
    if s["nonfinite_states"]:
        print(f"states with non-finite weights: {s['nonfinite_states']}")
    return 0


def cmd_twins(args: argparse.Namespace) -> int:
    from modelzoos.twins import cli_twins

    return cli_twins(args)


def cmd_build(args: argparse.Namespace) -> int:
    from modelzoos.publish import cli_build

    return cli_build(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from modelzoos.baselines.bench import cli_bench

    return cli_bench(args)


def cmd_push(args: argparse.Namespace) -> int:
    from pathlib import Path

    from modelzoos.hub import cli_push
    from modelzoos.publish import render_card

    if (Path(args.repo_dir) / "data").is_dir():  # usage snippets of the card name the Hub id, not a local path
        render_card(Path(args.repo_dir), repo_id=args.repo_id)
    return cli_push(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelzoos", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    z = sub.add_parser("zoos", help="list the zoo catalogue")
    z.add_argument("pattern", nargs="?", default="*", help="wildcard filter on zoo names, e.g. 'mnist_*'")
    z.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    z.set_defaults(func=cmd_zoos)

    g = sub.add_parser("generate", help="train a zoo into a directory (resumable)")
    g.add_argument("zoo", help="catalogue name (see `modelzoos zoos`) or path to a .toml spec")
    g.add_argument("--out", required=True, help="zoo directory to write (rerun to resume)")
    g.add_argument("--data-root", default=None,
                   help="folder holding the image datasets (default: $MODELZOOS_DATA or ~/.cache/modelzoos/data)")
    g.add_argument("--download", action="store_true", help="download missing image data (needs a network)")
    g.add_argument("--models", type=int, default=None, help="train only the first N models of the zoo")
    g.add_argument("--epochs", type=int, default=None, help="stop after E epochs (the first E of the full protocol)")
    g.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    g.add_argument("--engine", default="population",
                   help="population: many models batched at once (default); reference: one model at a time")
    g.add_argument("--chunk-size", type=int, default=None,
                   help="models trained together (population default: all; reference: 1)")
    g.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: train here; ray: one Ray task per chunk of models (--out on a shared filesystem)")
    g.add_argument("--ray-address", default=None,
                   help="Ray cluster host:port or 'auto' (default: $RAY_ADDRESS, else a local Ray instance)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    t = sub.add_parser("twins", help="sparsify every final model of a trained CNN zoo directory (resumable)")
    t.add_argument("source", help="zoo directory written by `modelzoos generate` (finished)")
    t.add_argument("--method", required=True, choices=catalogue.TWIN_METHODS,
                   help="vd: variational dropout (as the original twins); mp: magnitude pruning")
    t.add_argument("--out", required=True, help="twin directory to write (rerun to resume)")
    t.add_argument("--models", type=int, default=None, help="sparsify only the first N models of the source")
    t.add_argument("--epochs", type=int, default=None, help="stop after E of the 25 twin epochs")
    t.add_argument("--chunk-size", type=int, default=None, help="models sparsified together (default: all)")
    t.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    t.add_argument("--data-root", default=None, help="folder holding the image datasets (as for generate)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_twins)

    b = sub.add_parser("build", help="turn zoo directories into a Hugging Face dataset repository folder")
    b.add_argument("zoo_dirs", nargs="+", help="zoo directories written by `modelzoos generate`")
    b.add_argument("--repo", required=True, help="repository folder to create or extend (one config per zoo)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_build)

    u = sub.add_parser("push", help="publish a repository folder on the Hugging Face Hub (token from HF_TOKEN)")
    u.add_argument("repo_dir", help="folder built by `modelzoos build`")
    u.add_argument("--repo-id", required=True, help="ORG/NAME of the dataset repository on the Hub")
    u.add_argument("--config", default=None, help="push only this config (others on the Hub stay untouched)")
    u.add_argument("--private", action="store_true", help="create the repository as private")
    u.set_defaults(func=cmd_push)

    from modelzoos.baselines.bench import add_arguments

    c = sub.add_parser("bench", help="train and evaluate weight-space baselines on one published config")
    add_arguments(c)
    c.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    from modelzoos.data import DataCacheError, DataNotFoundError
    from modelzoos.distributed import DistributedError
    from modelzoos.export import ZooFileError
    from modelzoos.hub import HubError

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, DataNotFoundError, DataCacheError, ZooFileError, DistributedError, HubError) as err:
        # SpecError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
