"""Checks of the GPU fast paths that CPU tests cannot make (needs CUDA; run before trusting GPU timings).

    python benchmarks/gpu_check.py [--json results/gpu_check.json]

1. Population engine: CUDA-graph replay against eager execution (and eager against eager: cuDNN's noise
   floor), 16 digits models in 4 groups (relu/tanh × Adam/SGD, dropout 0 and 0.5), 2 epochs.
2. Population (GPU) against reference (GPU) per model after one epoch, as tests/test_population.py on CPU.
3. Population on GPU against population on CPU after one epoch.
4. ResNet-18 (reference engine): channels-last and ``torch.compile`` against the default layout, eager,
   after one epoch of 4 steps on random CIFAR-shaped data.

Prints max |Δ weight| and max |Δ accuracy| per check; exits 1 when a check exceeds its tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import textwrap
from dataclasses import replace
from pathlib import Path

import torch

from modelzoos.catalogue import get_zoo
from modelzoos.data import ImageData, Split, load_image_data
from modelzoos.population import train_population
from modelzoos.training import train_reference

# the mixed zoo of tests/test_population.py: the GPU check mirrors the CPU equivalence test
MIXED = """
extends = "digits_cnn_hyp_fix"
name = "mixed"
epochs = 2
[grid]
init = ["kaiming_uniform"]
activation = ["relu", "tanh"]
optimizer = ["adam", "sgd"]
lr = [0.0003, 0.0001]
weight_decay = [0.0001]
dropout = [0.0, 0.5]
[seeds]
range = [1, 1]
"""


def diff(a: list, b: list, epoch: int) -> dict:
    dw = (a[epoch].weights - b[epoch].weights).abs().max().item()
    da = max(abs(x - y) for k in ("train_acc", "val_acc", "test_acc")
             for x, y in zip(a[epoch].metrics[k], b[epoch].metrics[k], strict=True))
    return {"max_abs_weight": dw, "max_abs_acc": da}


def with_env(var: str, value: str, fn):
    old = os.environ.get(var)
    os.environ[var] = value
    try:
        return fn()
    finally:
        os.environ.pop(var) if old is None else os.environ.__setitem__(var, old)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile ResNet check")
    p.add_argument("--device", default="cuda", help="cpu: a smoke test of this script (no graphs to check)")
    args = p.parse_args()
    dev = args.device
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "mixed.toml"
        spec.write_text(textwrap.dedent(MIXED))
        zoo = get_zoo(spec)
    data = load_image_data(zoo.data)
    configs = zoo.models()
    checks: dict[str, dict] = {}
    tol: dict[str, float] = {}

    graph = list(train_population(zoo, configs, data, dev))
    eager = list(train_population(zoo, configs, data, dev, cuda_graphs=False))
    eager2 = list(train_population(zoo, configs, data, dev, cuda_graphs=False))
    checks["population: graph vs eager, epoch 2"] = diff(graph, eager, 2)
    checks["population: eager vs eager, epoch 2"] = diff(eager, eager2, 2)
    tol["population: graph vs eager, epoch 2"] = 1e-4
    ref = [list(train_reference(zoo, c, data, dev, stop=1)) for c in configs]
    ref_stacked = [replace(ref[0][e], weights=torch.cat([r[e].weights for r in ref]),
                           metrics={k: [r[e].metrics[k][0] for r in ref] for k in ref[0][e].metrics})
                   for e in range(2)]
    checks["population vs reference (GPU), epoch 1"] = diff(graph, ref_stacked, 1)
    tol["population vs reference (GPU), epoch 1"] = 1e-4
    cpu = list(train_population(zoo, configs, data, "cpu", stop=1))
    checks["population GPU vs CPU, epoch 1"] = diff(graph, cpu, 1)
    tol["population GPU vs CPU, epoch 1"] = 1e-4

    resnet = get_zoo("cifar10_resnet18_seed")
    gen = torch.Generator().manual_seed(0)
    imgs, labels = torch.randn(1536, 3, 32, 32, generator=gen), torch.randint(0, 10, (1536,), generator=gen)
    rdata = ImageData(replace(resnet.data, train_size=1024), 10, Split(imgs[:1024], labels[:1024]),
                      Split(imgs[1024:1280], labels[1024:1280]), Split(imgs[1280:], labels[1280:]), "random")
    rconfig = replace(resnet.models()[0], epochs=1)
    run = lambda: list(train_reference(resnet, rconfig, rdata, dev, stop=1))  # noqa: E731
    plain = with_env("MODELZOOS_CHANNELS_LAST", "0", run)
    plain2 = with_env("MODELZOOS_CHANNELS_LAST", "0", run)
    fast = run()
    checks["resnet18: default layout vs itself"] = diff(plain, plain2, 1)
    checks["resnet18: channels-last vs default layout"] = diff(fast, plain, 1)
    if not args.skip_compile:
        compiled = with_env("MODELZOOS_COMPILE", "1", run)
        checks["resnet18: compiled channels-last vs eager default layout"] = diff(compiled, plain, 1)

    device = torch.cuda.get_device_name() if dev.startswith("cuda") else dev
    print(f"device: {device}; torch {torch.__version__}\n")
    print("| check | max abs Δ weight | max abs Δ accuracy | tolerance (weights) |")
    print("|---|---:|---:|---:|")
    failed = False
    for name, d in checks.items():
        t = tol.get(name)
        failed |= t is not None and not d["max_abs_weight"] <= t
        print(f"| {name} | {d['max_abs_weight']:.2e} | {d['max_abs_acc']:.4f} | {t if t is not None else '–'} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": device, "torch": torch.__version__,
                                         "checks": checks, "tolerances": tol}, indent=2))
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
