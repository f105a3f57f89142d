"""``modelzoos generate ZOO --out DIR``: train a zoo into a zoo directory (resumable)."""

from __future__ import annotations

import argparse

from modelzoos.cli import add_threads, set_threads

INTERRUPTED = "interrupted; rerun the same command to resume (finished epochs are kept)"

def add_parser(sub) -> argparse.ArgumentParser:
    g = sub.add_parser("generate", help="train a zoo into a directory (resumable)")
    g.add_argument("zoo", help="catalogue name (see `modelzoos zoos`) or path to a .toml spec")
    g.add_argument("--out", required=True, help="zoo directory to write (rerun to resume)")
    g.add_argument("--data-root", default=None,
                   help="folder holding the image datasets (default: $MODELZOOS_DATA or ~/.cache/modelzoos/data)")
    g.add_argument("--download", action="store_true", help="download missing image data (needs a network)")
    g.add_argument("--models", type=int, default=None, help="train only the first N models of the zoo")
    g.add_argument("--epochs", type=int, default=None, help="stop after E epochs (the first E of the full protocol)")
    g.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    g.add_argument("--engine", default=None,
                   help="population: many models batched at once; reference: one model at a time "
                        "(default: the architecture's, population for the CNNs, reference for ResNet-18)")
    g.add_argument("--chunk-size", type=int, default=None,
                   help="models trained together (population default: all; reference: 1)")
    g.add_argument("--backend", default="local",
                   help="local: train here (default); ray: one Ray task per chunk of models (--out on a shared "
                        "filesystem)")
    g.add_argument("--ray-address", default=None,
                   help="Ray cluster host:port or 'auto' (default: $RAY_ADDRESS, else a local Ray instance)")
    g.add_argument("--optimizer-state", action="store_true",
                   help="also store every epoch's optimizer state (Adam moments, SGD momentum), as the original zoos "
                        "did; default: weights only (docs/format.md)")
    add_threads(g)
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return g


def run(args: argparse.Namespace) -> int:
    from modelzoos.catalogue import get_zoo
    from modelzoos.generate import generate

    set_threads(args.threads)
    result = generate(get_zoo(args.zoo), args.out, models=args.models, epochs=args.epochs, engine=args.engine,
                      device=args.device, data_root=args.data_root, download=args.download,
                      chunk_size=args.chunk_size, progress=not args.quiet, backend=args.backend,
                      ray_address=args.ray_address, optimizer_state=args.optimizer_state)
    s = result.summary()
    acc = s["test_acc"]
    print(f"zoo {s['zoo']}: {s['models']} models, {s['states']} states in {s['path']}")
    print(f"test accuracy at epoch {s['last_epoch']}: min {acc['min']:.3f}  25% {acc['p25']:.3f}  "
          f"median {acc['median']:.3f}  75% {acc['p75']:.3f}  max {acc['max']:.3f}")
    if s["nonfinite_states"]:
        print(f"states with non-finite weights: {s['nonfinite_states']}")
    return 0
