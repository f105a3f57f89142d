"""Regenerate catalogued zoos into one folder each (resumable: rerun the same command after a crash).

    python generation/regenerate.py 'mnist_*' --out zoos/ --data-root ~/data --download --device cuda
    python generation/regenerate.py '*_cnn_seed' --out zoos/ --backend ray --chunk-size 250
    python generation/regenerate.py 'mnist_cnn_seed' --out zoos/ --twins vd,mp --device cuda

Each zoo goes to ``<out>/<zoo name>``; the logic is ``modelzoos.generate.generate`` (same options as
``modelzoos generate``; each architecture trains with its default engine unless ``--engine`` is given).
``--twins vd,mp`` also sparsifies every CNN zoo into ``<out>/<zoo name>_sparse_<method>``
(``modelzoos.twins.sparsify``, as ``modelzoos twins``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modelzoos.architectures import get_architecture
from modelzoos.catalogue import TWIN_METHODS, list_zoos, twin_name
from modelzoos.generate import generate
from modelzoos.twins import sparsify


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pattern", help="wildcard over zoo names, e.g. 'mnist_*' or '*'")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--engine", default=None, help="default: each architecture's (population for CNNs, reference "
                                                  "for ResNet-18)")
    p.add_argument("--backend", default="local", choices=("local", "ray"))
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--twins", default="", help=f"comma-separated twin methods ({', '.join(TWIN_METHODS)}) for CNN zoos")
    args = p.parse_args()
    twins = [m for m in args.twins.split(",") if m]
    if set(twins) - set(TWIN_METHODS):
        raise SystemExit(f"unknown twin method(s) {sorted(set(twins) - set(TWIN_METHODS))}; valid: {TWIN_METHODS}")
    zoos = list_zoos(args.pattern, published=True)
    if not zoos:
        raise SystemExit(f"no published zoo matches {args.pattern!r}; see `modelzoos zoos`")
    for zoo in zoos:
        zd = generate(zoo, args.out / zoo.name, engine=args.engine, device=args.device, data_root=args.data_root,
                      download=args.download, chunk_size=args.chunk_size, backend=args.backend)
        print(zd.summary())
        for method in twins if get_architecture(zoo.architecture).layers is not None else []:
            twin = sparsify(zd, args.out / twin_name(zoo.name, method), method, device=args.device,
                            data_root=args.data_root, chunk_size=args.chunk_size)
            print(twin.summary())


if __name__ == "__main__":
    main()
