"""Population vs. reference engine: models·epochs/s, images/s and FLOP/s, measured in one run.

    python benchmarks/engines.py                        # CPU, digits, 1/10/100/1000 models, 1 epoch
    python benchmarks/engines.py --device cuda --data mnist-shaped --models 1 10 100 1000
    python benchmarks/engines.py --models 1000 --chunk-size 100     # population in chunks of 100, one after another
    python benchmarks/engines.py --device cuda --data mnist-shaped --models 1000 --eager   # no CUDA graphs

``--data mnist-shaped`` repeats the digits to MNIST's split sizes (50,000 / 10,000 / 10,000 images of
1×28×28): speed does not depend on pixel values. The reference engine trains one model at a time, so its
rate does not depend on the zoo size; it is measured on ``min(M, --reference-models)`` models.
Time per epoch includes the batched val/test evaluation after the epoch (as in generation), not epoch 0.
``--chunk-size K`` trains the population engine's M models in chunks of K, one chunk after another (as
``modelzoos generate --chunk-size K`` does); the times of the chunks add up.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from modelzoos.catalogue import get_zoo
from modelzoos.data import ImageData, Split, load_image_data
from modelzoos.population import train_population
from modelzoos.training import numerics, train_reference

# CNN-s FLOP per image (from its layer shapes): forward 0.388 MFLOP, forward + backward 0.93 MFLOP
TRAIN_FLOP, EVAL_FLOP = 0.93e6, 0.388e6


def mnist_shaped(data: ImageData) -> ImageData:
    def rep(split: Split, n: int) -> Split:
        idx = torch.arange(n) % split.labels.numel()
        return Split(split.images[idx].contiguous(), split.labels[idx].contiguous())

    return ImageData(data.recipe, data.num_classes, rep(data.train, 50_000), rep(data.val, 10_000),
                     rep(data.test, 10_000), "mnist-shaped")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_epochs(trainer, epochs: int, device: str) -> float:
    """Seconds for epochs 1..E (epoch 0, setup and the first-step warm-up excluded)."""
    it = iter(trainer)
    next(it)  # epoch 0: construction + evaluation of the untrained models
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        next(it)
    _sync(device)
    return time.perf_counter() - start


def measure(zoo, data, models: int, epochs: int, device: str, reference_models: int,
            chunk_size: int | None = None, repeats: int = 1, cuda_graphs: bool = True) -> list[dict]:
    """Both engines, alternating, ``repeats`` times; each engine's best (shortest) time is kept."""
    configs = zoo.models()[:models]
    chunk = chunk_size or models
    n_train = data.train.labels.numel()
    n_eval = data.val.labels.numel() + data.test.labels.numel()
    measured = {"population": models, "reference": min(models, reference_models)}
    timers = {
        "population": lambda: sum(time_epochs(train_population(zoo, configs[i : i + chunk], data, device, stop=epochs,
                                                               cuda_graphs=cuda_graphs), epochs, device)
                                  for i in range(0, models, chunk)),
        "reference": lambda: sum(time_epochs(train_reference(zoo, c, data, device, stop=epochs), epochs, device)
                                 for c in configs[: measured["reference"]]),
    }
    best = dict.fromkeys(timers, float("inf"))
    for _ in range(repeats):
        for engine, timer in timers.items():
            best[engine] = min(best[engine], timer())
    rows = []
    for engine, seconds in best.items():
        me = measured[engine] * epochs / seconds
        rows.append({
            "engine": engine, "models": models, "measured_models": measured[engine], "epochs": epochs,
            "repeats": repeats,
            "chunk_size": min(chunk, models) if engine == "population" else 1,
            "seconds": seconds, "model_epochs_per_s": me, "train_images_per_s": me * n_train,
            "flop_per_s": me * (n_train * TRAIN_FLOP + n_eval * EVAL_FLOP),
        })
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=int, nargs="+", default=[1, 10, 100, 1000])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", choices=("digits", "mnist-shaped"), default="digits")
    p.add_argument("--reference-models", type=int, default=3)
    p.add_argument("--peak-flops", type=float, default=None, help="hardware FP32 peak, FLOP/s, for the ratio")
    p.add_argument("--chunk-size", type=int, default=None, help="population: models per chunk (default: all)")
    p.add_argument("--repeats", type=int, default=1, help="measure each engine R times (alternating), keep the best")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--eager", action="store_true", help="population engine without CUDA graphs (GPU only)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    zoo = get_zoo("digits_cnn_seed")
    data = load_image_data(zoo.data)
    if args.data == "mnist-shaped":
        data = mnist_shaped(data)
    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda")
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"machine: {machine}; torch {torch.__version__}; data {args.data} "
          f"({data.train.labels.numel()} train images); zoo {zoo.name}; {args.epochs} epoch(s); best of "
          f"{args.repeats}; numerics {numerics(args.device)}{'; eager (no CUDA graphs)' if args.eager else ''}\n")
    print("| models | engine | chunk | measured models | s | models·epochs/s | train images/s | GFLOP/s | % of peak |"
          " population ÷ reference |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    rows = []
    for m in args.models:  # each size's rows as soon as they are measured
        pop, ref = measure(zoo, data, m, args.epochs, args.device, args.reference_models, args.chunk_size,
                           args.repeats, cuda_graphs=not args.eager)
        rows += [pop, ref]
        for r in (pop, ref):
            peak = f"{100 * r['flop_per_s'] / args.peak_flops:.2f}" if args.peak_flops else "–"
            ratio = f"{pop['model_epochs_per_s'] / ref['model_epochs_per_s']:.1f}×" if r is pop else ""
            print(f"| {r['models']} | {r['engine']} | {r['chunk_size']} | {r['measured_models']} | "
                  f"{r['seconds']:.1f} | {r['model_epochs_per_s']:.3f} | {r['train_images_per_s']:,.0f} | "
                  f"{r['flop_per_s'] / 1e9:.2f} | {peak} | {ratio} |", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "torch": torch.__version__, "data": args.data,
                                         "threads": torch.get_num_threads(), "numerics": numerics(args.device),
                                         "cuda_graphs": args.device.startswith("cuda") and not args.eager,
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
