"""The full MNIST CNN seed zoo (1,000 models × 50 epochs, batch 10) through ``modelzoos generate``, timed.

    python benchmarks/mnist_zoo.py --device cuda --out /tmp/zoo [--models 1000 --epochs 50]

Offline stand-in for MNIST: the scikit-learn digits upscaled to 28×28 uint8, repeated to MNIST's 60,000
train / 10,000 test images and written as MNIST's IDX files, so the real reader, the protocol's 50,000 /
10,000 split and the real spec run unchanged (speed does not depend on pixel values). Reports the wall
time of building the data cache and of ``generate`` itself: training, every epoch's val/test evaluation
and every state written (weights, resumable training state, metadata.parquet).
"""

from __future__ import annotations

import argparse
import json
import struct
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from modelzoos.catalogue import get_zoo
from modelzoos.data import load_image_data
from modelzoos.generate import generate
from modelzoos.training import numerics


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX file as MNIST ships it: magic 0x0000 08 <ndim>, big-endian dimensions, uint8 data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_shaped(root: Path) -> None:
    digits = load_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] * (255 / 16)
    x = F.interpolate(x, size=28, mode="bilinear", align_corners=False).round().clamp(0, 255)[:, 0].numpy()
    y = digits.target
    for split, n, offset in (("train", 60_000, 0), ("t10k", 10_000, 60_000)):
        idx = (np.arange(n) + offset) % len(y)
        write_idx(root / "MNIST" / "raw" / f"{split}-images-idx3-ubyte", x[idx])
        write_idx(root / "MNIST" / "raw" / f"{split}-labels-idx1-ubyte", y[idx])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="work folder: data root and zoo directory")
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--device", default="cuda")
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    zoo = get_zoo("mnist_cnn_seed")
    root = args.out / "data"
    write_mnist_shaped(root)
    start = time.perf_counter()
    load_image_data(zoo.data, root)  # reads the IDX files, splits, normalises, caches
    data_s = time.perf_counter() - start
    start = time.perf_counter()
    zd = generate(zoo, args.out / "zoo", models=args.models, epochs=args.epochs, device=args.device, data_root=root,
                  chunk_size=args.chunk_size)
    wall = time.perf_counter() - start
    meta = zd.metadata
    final = meta[meta["epoch"] == args.epochs]["test_acc"]
    size = sum(f.stat().st_size for f in (args.out / "zoo").rglob("*") if f.is_file())
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    result = {"device": device, "torch": torch.__version__, "numerics": numerics(args.device), "models": args.models,
              "epochs": args.epochs, "states": len(meta), "data_cache_s": data_s, "generate_wall_s": wall,
              "zoo_bytes": size, "final_test_acc_median": float(final.median())}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
