"""ResNet-18 zoos on a GPU: one model's training in the reference engine's layouts and modes, timed.

    python benchmarks/resnet.py --device cuda [--zoo cifar10_resnet18_seed] [--train-images 10240]

Random data of the zoo's image shape (speed does not depend on pixel values), train/val/test in the real
split ratios, the zoo's batch size, OneCycle SGD and augmentation on the device: what ``modelzoos
generate`` runs per model. Each variant trains 2 epochs; epoch 2 is timed (training plus the val/test
evaluation after it), so warm-up and compilation stay out. Variants (docs/protocol.md, "Numerics"):

- ``default layout``: ``MODELZOOS_CHANNELS_LAST=0`` (the default on CUDA), eager
- ``default layout + TF32``: ``MODELZOOS_TF32=1`` (10-bit mantissa products, not float32: opt-in)
- ``channels-last``: ``MODELZOOS_CHANNELS_LAST=1``, eager
- ``channels-last + compile``: ``MODELZOOS_COMPILE=1`` (fused kernels: another rounding, opt-in)
- ``… + TF32``: ``MODELZOOS_TF32=1`` (10-bit mantissa products, not float32: opt-in)

Projection per 1,000-model zoo, one model after another on one GPU: models × epochs × (timed epoch scaled
to the real split sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from modelzoos.catalogue import get_zoo
from modelzoos.data import ImageData, Split
from modelzoos.training import train_reference

REAL_SPLITS = {"cifar10": (40_000, 10_000, 10_000), "cifar100": (40_000, 10_000, 10_000),
               "tinyimagenet": (100_000, 0, 10_000)}  # train / val / test images of the ResNet-18 zoos
FLOP_PER_TRAIN_IMAGE = {32: 3.3e9, 64: 4 * 3.3e9}  # ResNet-18 (small stem) fwd + bwd, by image size
VARIANTS = {
    "default layout": {"MODELZOOS_CHANNELS_LAST": "0", "MODELZOOS_COMPILE": "0", "MODELZOOS_TF32": "0"},
    "default layout + TF32": {"MODELZOOS_CHANNELS_LAST": "0", "MODELZOOS_COMPILE": "0", "MODELZOOS_TF32": "1"},
    "channels-last": {"MODELZOOS_CHANNELS_LAST": "1", "MODELZOOS_COMPILE": "0", "MODELZOOS_TF32": "0"},
    "channels-last + compile": {"MODELZOOS_CHANNELS_LAST": "1", "MODELZOOS_COMPILE": "1", "MODELZOOS_TF32": "0"},
    "channels-last + compile + TF32": {"MODELZOOS_CHANNELS_LAST": "1", "MODELZOOS_COMPILE": "1",
                                       "MODELZOOS_TF32": "1"},
}


def random_data(zoo, train_images: int) -> tuple[ImageData, float]:
    """Random data in the zoo's shape and split ratios; returns it and the scale to the real split sizes."""
    real = REAL_SPLITS[zoo.data.dataset]
    scale = real[0] / train_images
    sizes = [round(n / scale) for n in real]
    gen = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.randn(n, zoo.in_channels, zoo.data.size, zoo.data.size, generator=gen),
                     torch.randint(0, zoo.num_classes, (n,), generator=gen))

    recipe = replace(zoo.data, train_size=sizes[0]) if sizes[1] else zoo.data
    return ImageData(recipe, zoo.num_classes, split(sizes[0]), split(sizes[1]) if sizes[1] else None,
                     split(sizes[2]), "random"), scale


def time_epoch_2(zoo, data: ImageData, device: str) -> float:
    it = train_reference(zoo, zoo.models()[0], data, device, stop=2)
    next(it), next(it)  # epoch 0 (eval) and epoch 1 (warm-up, compilation)
    sync = torch.cuda.synchronize if device.startswith("cuda") else lambda: None
    sync()
    start = time.perf_counter()
    next(it)
    sync()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", default="cifar10_resnet18_seed")
    p.add_argument("--device", default="cuda")
    p.add_argument("--train-images", type=int, default=10_240)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    zoo = get_zoo(args.zoo)
    data, scale = random_data(zoo, args.train_images)
    n_train = data.train.labels.numel()
    rows = []
    for name in args.variants:
        os.environ.update(VARIANTS[name])
        seconds = time_epoch_2(zoo, data, args.device)
        epoch_s = seconds * scale
        rows.append({"variant": name, "env": VARIANTS[name], "epoch_seconds_measured": seconds,
                     "train_images": n_train, "images_per_s": n_train / seconds,
                     "tflop_per_s": n_train / seconds * FLOP_PER_TRAIN_IMAGE[zoo.data.size] / 1e12,
                     "full_epoch_seconds": epoch_s,
                     "hours_per_1000_models": 1000 * zoo.epochs * epoch_s / 3600})
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(f"device: {device}; torch {torch.__version__}; zoo {zoo.name} (batch {zoo.models()[0].batch_size}, "
          f"{zoo.epochs} epochs); {n_train} train images per timed epoch, scaled ×{scale:.2f} to the real split\n")
    print("| variant | train images/s (incl. eval) | TFLOP/s (train) | s per real epoch | h per 1,000-model zoo |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['images_per_s']:,.0f} | {r['tflop_per_s']:.1f} | {r['full_epoch_seconds']:.1f} |"
              f" {r['hours_per_1000_models']:.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": device, "torch": torch.__version__, "zoo": zoo.name,
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
