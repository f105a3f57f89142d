"""Regenerate catalogued zoos into one folder each (resumable: rerun the same command after a crash).

    python generation/regenerate.py 'mnist_*' --out zoos/ --data-root ~/data --download --device cuda
    python generation/regenerate.py '*_cnn_seed' --out zoos/ --backend ray --chunk-size 250

Each zoo goes to ``<out>/<zoo name>``; the logic is ``modelzoos.export.generate`` (same options as
``modelzoos generate``). ResNet-18 zoos need ``--engine reference``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modelzoos.catalogue import list_zoos
from modelzoos.export import generate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pattern", help="wildcard over zoo names, e.g. 'mnist_*' or '*'")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--engine", default=None, help="default: population for CNN zoos, reference for ResNet-18")
    p.add_argument("--backend", default="local", choices=("local", "ray"))
    p.add_argument("--chunk-size", type=int, default=None)
    args = p.parse_args()
    zoos = list_zoos(args.pattern, published=True)
    if not zoos:
        raise SystemExit(f"no published zoo matches {args.pattern!r}; see `modelzoos zoos`")
    for zoo in zoos:
        engine = args.engine or ("reference" if zoo.architecture == "resnet18" else "population")
        zd = generate(zoo, args.out / zoo.name, engine=engine, device=args.device, data_root=args.data_root,
                      download=args.download, chunk_size=args.chunk_size, backend=args.backend)
        print(zd.summary())


if __name__ == "__main__":
    main()
