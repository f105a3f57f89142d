"""``modelzoos twins SOURCE --method vd|mp --out DIR``: sparsify every final model of a trained CNN zoo."""

from __future__ import annotations

import argparse
import time

from modelzoos.cli import add_threads, set_threads

INTERRUPTED = "interrupted; rerun the same command to resume (finished epochs are kept)"


def add_parser(sub) -> argparse.ArgumentParser:
    t = sub.add_parser("twins", help="sparsify every final model of a trained CNN zoo directory (resumable)")
    t.add_argument("source", help="zoo directory written by `modelzoos generate` (finished)")
    t.add_argument("--method", required=True,
                   help="vd: variational dropout (as the original twins); mp: magnitude pruning")
    t.add_argument("--out", required=True, help="twin directory to write (rerun to resume)")
    t.add_argument("--models", type=int, default=None, help="sparsify only the first N models of the source")
    t.add_argument("--epochs", type=int, default=None, help="stop after E of the 25 twin epochs")
    t.add_argument("--chunk-size", type=int, default=None, help="models sparsified together (default: all)")
    t.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    t.add_argument("--data-root", default=None, help="folder holding the image datasets (as for generate)")
    add_threads(t)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    return t


def run(args: argparse.Namespace) -> int:
    from modelzoos.catalogue import TWIN_EPOCHS
    from modelzoos.twins import sparsify, summary

    set_threads(args.threads)
    start = time.perf_counter()
    twin = sparsify(args.source, args.out, args.method, device=args.device, models=args.models,
                    progress=not args.quiet, epochs=TWIN_EPOCHS if args.epochs is None else args.epochs,
                    chunk_size=args.chunk_size, data_root=args.data_root)
    s = summary(twin)
    last = max(s)
    q = s[last]
    models = int(twin.metadata.model_id.nunique())
    print(f"twins {twin.zoo.name}: {models} models, epochs 0..{last}, in {twin.path} "
          f"({time.perf_counter() - start:.1f} s)")
    print(f"epoch {last} (median [25%, 75%] across models): sparsity {q['sparsity'][1]:.3f} "
          f"[{q['sparsity'][0]:.3f}, {q['sparsity'][2]:.3f}], test accuracy {q['test_acc'][1]:.3f} "
          f"[{q['test_acc'][0]:.3f}, {q['test_acc'][2]:.3f}], drop from the dense model {q['acc_drop'][1]:.3f} "
          f"[{q['acc_drop'][0]:.3f}, {q['acc_drop'][2]:.3f}]")
    return 0
