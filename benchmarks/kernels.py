"""The fused training-step kernels (MODELZOOS_KERNELS=fused) on a GPU: compile, check, time, profile, full zoo.

    python benchmarks/kernels.py compile                               # no GPU: registers, spills per variant
    python benchmarks/kernels.py warm                                  # compile every kernel variant used below
    python benchmarks/kernels.py check --json OUT/kernels_check.json   # fused = torch engine after one epoch
    python benchmarks/kernels.py steps --json OUT/kernels_steps.json   # ms per step, 1..1000 models; configs
    python benchmarks/kernels.py profile                               # where a fused step's time goes
    python benchmarks/kernels.py zoo --out /tmp/kzoo --budget-s 300 --steps-json OUT/kernels_steps.json \\
        --json OUT/kernels_zoo.json                                    # the 1,000-model MNIST zoo, sized to fit
    python benchmarks/kernels.py zoo --out /tmp/kzoo --epochs 50 --json OUT/kernels_zoo50.json  # all 50

``compile`` builds the kernel for Hopper (sm_90) without a GPU, through Triton's compiler and ptxas, and
reports per architecture and tile configuration the registers per thread, the stack frame (spills) and the
shared memory. ``warm`` compiles the kernel variants of ``check`` and ``steps`` in parallel processes into
Triton's cache (one compile takes about a minute; serially they would eat the GPU lease). ``check``: the
mixed digits zoo of gpu_check.py (relu/tanh × Adam/SGD, dropout 0 and 0.5) and CNN-s with 3 channels and
CNN-m on random images (the other activations), one epoch through ``train_population`` with each switch
value; fused graph replay against fused eager, and fused against itself (no atomics: bitwise expected).
``steps``: ms per training step (CUDA graphs for both engines) of the ``mnist_cnn_seed`` models on
MNIST-shaped batches, and at 1,000 models the kernel's tile sizes and warps. ``zoo``: ``modelzoos
generate`` of the MNIST seed zoo with the fused kernels, as many of the 50 epochs as the measured step
time lets fit into ``--budget-s`` (all 50 when it fits), with the projection to 50 epochs; or ``--epochs``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch

DEVICE = "cuda"  # --device cpu (with TRITON_INTERPRET=1): a smoke test of the steps stage, no timing
MODELS = (1, 10, 100, 1000)
# (block_rows, block_k, num_warps, max_registers) tried at 1,000 models; the first: modelzoos.kernels.fused's
# defaults. Compiled for sm_90 (compile stage): 254 registers with 4 warps, 112 with 8, no spills either way.
CONFIGS = ((32, 16, 4, None), (32, 16, 8, None), (32, 16, 4, 128), (64, 16, 8, None))
SETUP_S = 30  # zoo: building 1,000 models on the CPU, CUDA-graph capture, first writes (estimate)


def with_kernels(value: str, fn, *args, **kwargs):
    """``fn`` with MODELZOOS_KERNELS=value (read when a group's steps are built)."""
    old = os.environ.get("MODELZOOS_KERNELS")
    os.environ["MODELZOOS_KERNELS"] = value
    try:
        return fn(*args, **kwargs)
    finally:
        os.environ.pop("MODELZOOS_KERNELS") if old is None else os.environ.__setitem__("MODELZOOS_KERNELS", old)


# ---------------------------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------------------------


def random_data(recipe, channels: int, size: int, n: int = 1000, seed: int = 0):
    from modelzoos.data import ImageData, Split

    gen = torch.Generator().manual_seed(seed)
    images, labels = torch.randn(n + 400, channels, size, size, generator=gen), torch.randint(0, 10, (n + 400,),
                                                                                            generator=gen)
    return ImageData(recipe, 10, Split(images[:n], labels[:n]), Split(images[n : n + 200], labels[n : n + 200]),
                     Split(images[n + 200 :], labels[n + 200 :]), "random")


def check_workloads() -> dict[str, tuple]:
    """name → (zoo, configs, data): the check's zoos, covering every activation, both optimizers, dropout."""
    from gpu_check import MIXED

    from modelzoos.catalogue import get_zoo
    from modelzoos.data import load_image_data

    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "mixed.toml"
        spec.write_text(textwrap.dedent(MIXED))
        mixed = get_zoo(spec)
    out = {"cnn_s_digits_mixed": (mixed, mixed.models(), load_image_data(mixed.data))}
    for name, zoo_name, size, groups in (("cnn_s_3ch_random", "cifar10_cnn_seed", 28,
                                          [("gelu", "adam", 0.5), ("sigmoid", "sgd", 0.0)]),
                                         ("cnn_m_random", "cifar10_cnn_m_seed", 32,
                                          [("tanh", "sgd", 0.5), ("relu", "adam", 0.0)])):
        zoo = get_zoo(zoo_name)
        base = zoo.models()[:4]
        configs = [replace(c, activation=a, optimizer=o, dropout=p * (i % 2), lr=3e-4)
                   for i, (c, (a, o, p)) in enumerate(zip(base, [g for g in groups for _ in range(2)], strict=True))]
        out[name] = (zoo, configs, random_data(zoo.data, 3, size))
    return out


def mnist_workload(models: int):
    from engines import mnist_shaped

    from modelzoos.catalogue import get_zoo
    from modelzoos.data import load_image_data

    zoo = get_zoo("mnist_cnn_seed")
    return zoo, zoo.models()[:models], mnist_shaped(load_image_data(get_zoo("digits_cnn_seed").data))


# ---------------------------------------------------------------------------------------------------------
# compile: for sm_90 on the CPU
# ---------------------------------------------------------------------------------------------------------

ARCHITECTURES = {"cnn_s_1ch": ("cnn", 1, 28), "cnn_s_3ch": ("cnn", 3, 28), "cnn_m": ("cnn_m", 3, 32)}
INT64_ARGS = {"labels", "idx", "keys", "step_ptr", "correct", "tensors"}


def compile_sm90(args) -> None:
    import re
    import subprocess

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from modelzoos.architectures import get_architecture
    from modelzoos.kernels import cnn_step
    from modelzoos.kernels.fused import NUM_STAGES, plan

    kernel = cnn_step.train_step_kernel
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    rows = []
    for name, (arch, channels, size) in ARCHITECTURES.items():
        specs = get_architecture(arch).layers
        for block_rows, block_k, warps, registers in CONFIGS:
            consts = plan(specs, channels, size, 10, 10, "gelu", "adam", True, block_rows=block_rows,
                          block_k=block_k).constants | {"STORE_GRADS": 0}
            signature = {a: "constexpr" if a in consts else "i32" if a == "B" else "*i8" if a == "argmax"
                         else "*i64" if a in INT64_ARGS else "*fp32" for a in kernel.arg_names}
            start = time.perf_counter()
            options = {"num_warps": warps, "num_stages": NUM_STAGES} | ({"maxnreg": registers} if registers else {})
            compiled = triton.compile(ASTSource(kernel, signature, consts), target=GPUTarget("cuda", 90, 32),
                                      options=options)
            sec = time.perf_counter() - start
            with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                f.write(compiled.asm["cubin"])
                f.flush()
                usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True,
                                       text=True, check=True).stdout
            found = dict(re.findall(r"(REG|STACK|LOCAL):(\d+)", usage))
            row = {"architecture": name, "block_rows": block_rows, "block_k": block_k, "num_warps": warps,
                   "max_registers": registers, "registers": int(found["REG"]), "stack_bytes": int(found["STACK"]),
                   "shared_bytes": compiled.metadata.shared, "compile_s": sec}
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_json(args.json, {"triton": triton.__version__, "target": "sm_90", "variant": "gelu, Adam, dropout",
                           "rows": rows})


# ---------------------------------------------------------------------------------------------------------
# warm: compile in parallel
# ---------------------------------------------------------------------------------------------------------


def _compile(job: tuple) -> tuple[str, float]:
    """Build and run one fused step of the group ``job`` describes (on 16 random images), compiling its kernel;
    the config's dropout > 0 compiles the variant with masks."""
    from modelzoos.architectures import get_architecture
    from modelzoos.kernels.fused import FusedStep
    from modelzoos.population import PopulationCNN, initial_groups

    arch, channels, size, config, block_rows, block_k, num_warps, registers, zoo = job
    dev = torch.device(DEVICE)
    start = time.perf_counter()
    (g,) = initial_groups(zoo, [config], dev)
    net = PopulationCNN(get_architecture(arch).layers, config.activation)
    images, labels = torch.randn(16, channels, size, size, device=dev), torch.zeros(16, dtype=torch.int64, device=dev)
    step = FusedStep(g, net, images, labels, config.batch_size, block_rows=block_rows, block_k=block_k,
                     num_warps=num_warps, max_registers=registers)
    step(torch.zeros(1, config.batch_size, dtype=torch.int64, device=dev), g.seeds,
         torch.zeros((), dtype=torch.int64, device=dev))
    sync()
    return f"{arch} {channels}×{size} {config.activation}/{config.optimizer} dropout={config.dropout} " \
           f"tiles {block_rows}/{block_k} warps {num_warps} registers {registers}", time.perf_counter() - start


def warm(args) -> None:
    from modelzoos.kernels import fused

    jobs = []
    for zoo, configs, data in check_workloads().values():
        groups: dict[tuple, list] = {}
        for c in configs:
            groups.setdefault((c.activation, c.optimizer), []).append(c)
        shape = data.train.images.shape
        jobs += [(zoo.architecture, shape[1], shape[-1], replace(cs[0], dropout=max(c.dropout for c in cs)),
                  fused.BLOCK_ROWS, fused.BLOCK_K, fused.NUM_WARPS, None, zoo) for cs in groups.values()]
    zoo, configs, _ = mnist_workload(1)
    jobs += [("cnn", 1, 28, configs[0], *cfg, zoo) for cfg in CONFIGS]
    start = time.perf_counter()
    ctx = torch.multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1), mp_context=ctx) as pool:
        for name, sec in pool.map(_compile, jobs):
            print(f"compiled {name}: {sec:.1f} s", flush=True)
    print(f"{len(jobs)} kernel variants in {time.perf_counter() - start:.1f} s", flush=True)


# ---------------------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------------------


def _diff(a, b) -> dict:
    """Largest and 99th-percentile |Δ weight| (a few weights off: a pooling near-tie or Adam near ε; many: a
    fault), largest |Δ accuracy|, bitwise equality."""
    dw = (a.weights - b.weights).abs()
    da = max(abs(x - y) for k in ("train_acc", "val_acc", "test_acc")
             for x, y in zip(a.metrics[k], b.metrics[k], strict=True))
    return {"max_abs_weight": dw.max().item(), "p99_abs_weight": dw.flatten().quantile(0.99).item(),
            "max_abs_acc": da, "bitwise": bool(torch.equal(a.weights, b.weights))}


def check(args) -> None:
    from modelzoos.population import train_population

    checks, tolerances = {}, {}
    for name, (zoo, configs, data) in check_workloads().items():
        run = lambda kernels, graphs=True: with_kernels(  # noqa: E731
            kernels, lambda: list(train_population(zoo, configs, data, DEVICE, stop=1, cuda_graphs=graphs)))  # noqa: B023
        torch_run, fused_run = run("torch"), run("fused")
        checks[f"{name}: fused vs torch engine, epoch 1"] = _diff(fused_run[1], torch_run[1])
        tolerances[f"{name}: fused vs torch engine, epoch 1"] = 1e-4
        checks[f"{name}: fused, graph vs eager, epoch 1"] = _diff(fused_run[1], run("fused", False)[1])
        checks[f"{name}: fused vs fused, epoch 1"] = _diff(fused_run[1], run("fused")[1])
        checks[f"{name}: torch vs torch, epoch 1"] = _diff(torch_run[1], run("torch")[1])
    failed = False
    print(f"device: {device_name()}; torch {torch.__version__}\n")
    print("| check | max abs Δ weight | 99th percentile | max abs Δ accuracy | bitwise | tolerance (max) |")
    print("|---|---:|---:|---:|---|---:|")
    for name, d in checks.items():
        t = tolerances.get(name)
        failed |= t is not None and not d["max_abs_weight"] <= t
        print(f"| {name} | {d['max_abs_weight']:.2e} | {d['p99_abs_weight']:.2e} | {d['max_abs_acc']:.4f} | "
              f"{d['bitwise']} | {t or '–'} |")
    write_json(args.json, {"device": device_name(), "torch": torch.__version__, "checks": checks,
                           "tolerances": tolerances})
    raise SystemExit(1 if failed else 0)


# ---------------------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------------------


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def device_name() -> str:
    return torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE


def timed(fn) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def steps(args) -> None:
    from engines import TRAIN_FLOP

    from modelzoos.architectures import CNN_S
    from modelzoos.kernels.fused import FusedStep
    from modelzoos.population import PopulationCNN, evaluate, initial_groups, zoo_steps
    from modelzoos.training import numerics

    dev = torch.device(DEVICE)
    zoo, configs, data = mnist_workload(max(args.models))
    bs = configs[0].batch_size
    n = args.steps * bs
    images, labels = data.train.images[:n].to(dev), data.train.labels[:n].to(dev)
    rows, result = [], {"device": device_name(), "torch": torch.__version__,
                        "numerics": numerics(dev), "steps": args.steps}
    print("| models | engine | ms per step | model-steps/s | TFLOP/s | first epoch s |", flush=True)
    print("|---:|---|---:|---:|---:|---:|", flush=True)
    for m in args.models:
        (g,) = initial_groups(zoo, configs[:m], dev)
        net = PopulationCNN(CNN_S, g.activation, bool(numerics(dev)["channels_last"]))
        for kernels in ("torch", "fused"):
            st = zoo_steps(g, net, images, labels, bs, True, kernels)
            first = timed(lambda: st.epoch(1))  # noqa: B023
            ms = 1e3 * timed(lambda: st.epoch(2)) / args.steps  # noqa: B023
            rows.append({"models": m, "kernels": kernels, "ms_per_step": ms, "first_epoch_s": first})
            print(f"| {m} | {kernels} | {ms:.3f} | {m * 1e3 / ms:,.0f} | {m * bs * TRAIN_FLOP / ms / 1e9:.2f} | "
                  f"{first:.1f} |", flush=True)
    params = {k: v.detach() for k, v in g.params.items()}
    result["eval_s_val"] = timed(lambda: evaluate(net, params, data.val, dev))
    result["rows"] = rows
    sweep = []
    idx = torch.randint(0, n, (g.m, bs), device=dev)
    done = torch.zeros((), dtype=torch.int64, device=dev)
    for block_rows, block_k, warps, registers in CONFIGS:
        step = FusedStep(g, net, images, labels, bs, block_rows=block_rows, block_k=block_k, num_warps=warps,
                         max_registers=registers)
        step(idx, g.seeds, done)
        replay = lambda: step(idx, g.seeds, done)  # noqa: E731, B023
        if DEVICE == "cuda":
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step(idx, g.seeds, done)
            replay = graph.replay
        ms = 1e3 * timed(lambda: [replay() for _ in range(args.steps)]) / args.steps  # noqa: B023
        sweep.append({"block_rows": block_rows, "block_k": block_k, "num_warps": warps, "max_registers": registers,
                      "ms_per_step": ms})
        print(f"fused kernel, {g.m} models, tiles {block_rows}/{block_k}, {warps} warps, registers {registers}: "
              f"{ms:.3f} ms per step", flush=True)
    result["configs"] = sweep
    print(f"val evaluation of {g.m} models (10,000 images): {result['eval_s_val']:.2f} s", flush=True)
    write_json(args.json, result)


# ---------------------------------------------------------------------------------------------------------
# profile
# ---------------------------------------------------------------------------------------------------------


def profile(args) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from modelzoos.architectures import CNN_S
    from modelzoos.population import PopulationCNN, initial_groups, zoo_steps

    dev = torch.device(DEVICE)
    zoo, configs, data = mnist_workload(args.models)
    bs = configs[0].batch_size
    images, labels = data.train.images[: 10 * bs].to(dev), data.train.labels[: 10 * bs].to(dev)
    (g,) = initial_groups(zoo, configs, dev)
    net = PopulationCNN(CNN_S, g.activation)
    st = zoo_steps(g, net, images, labels, bs, False, "fused")
    st.epoch(1)
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        st.epoch(2)
        sync()
    print(f"10 eager fused steps of {g.m} models:", flush=True)
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15), flush=True)


# ---------------------------------------------------------------------------------------------------------
# zoo
# ---------------------------------------------------------------------------------------------------------


def zoo(args) -> None:
    from mnist_zoo import write_mnist_shaped

    from modelzoos.catalogue import get_zoo
    from modelzoos.data import load_image_data
    from modelzoos.generate import generate
    from modelzoos.training import numerics

    start = time.perf_counter()
    models = max(args.models)
    mnist = get_zoo("mnist_cnn_seed")
    root = args.out / "data"
    write_mnist_shaped(root)
    load_image_data(mnist.data, root)  # reads, splits, normalises and caches the data, as generate will
    result = {"device": device_name(), "torch": torch.__version__,
              "numerics": with_kernels("fused", numerics, DEVICE), "models": models}
    epochs = args.epochs
    if epochs is None:  # as many as fit: an epoch = its steps + val and test evaluation (2 val passes);
        # epoch 0 = evaluation of the 3 splits (train = 5 × val) + SETUP_S
        measured = json.loads(args.steps_json.read_text())
        ms = min(r["ms_per_step"] for r in measured["rows"] if r["models"] == models and r["kernels"] == "fused")
        epoch_s = math.ceil(mnist.data.train_size / mnist.batch_size) * ms / 1e3 + 2 * measured["eval_s_val"]
        epoch0_s = 7 * measured["eval_s_val"] + SETUP_S
        left = args.budget_s - (time.perf_counter() - start)
        epochs = max(0, min(mnist.epochs, int((left - epoch0_s) / epoch_s)))
        result |= {"ms_per_step": ms, "estimate_epoch_s": epoch_s, "estimate_epoch0_s": epoch0_s,
                   "estimate_50_epochs_s": epoch0_s + mnist.epochs * epoch_s, "budget_s": left}
        print(f"estimate: {epoch_s:.1f} s per epoch ({ms:.3f} ms per step), epoch 0 and setup {epoch0_s:.1f} s → "
              f"{epochs} of {mnist.epochs} epochs fit into {left:.0f} s", flush=True)
    result["epochs"] = epochs
    if epochs >= 1:
        start = time.perf_counter()
        zd = with_kernels("fused", generate, mnist, args.out / "zoo", models=models, epochs=epochs, device=DEVICE,
                          data_root=root, progress=False)
        wall = time.perf_counter() - start
        meta = zd.metadata
        per_epoch = (wall - result.get("estimate_epoch0_s", 0)) / epochs
        result |= {"states": len(meta), "generate_wall_s": wall,
                   "projected_50_epochs_s": wall + (mnist.epochs - epochs) * per_epoch,
                   "final_test_acc_median": float(meta[meta["epoch"] == epochs]["test_acc"].median())}
    print(json.dumps(result, indent=2), flush=True)
    write_json(args.json, result)


def write_json(path: Path | None, result: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))


def main() -> None:
    global DEVICE
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("compile", "warm", "check", "steps", "profile", "zoo"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--models", type=int, nargs="+", default=list(MODELS))
    p.add_argument("--steps", type=int, default=200, help="steps: timed steps per measurement")
    p.add_argument("--out", type=Path, default=Path("/tmp/kernels_zoo"), help="zoo: data and zoo folder")
    p.add_argument("--budget-s", type=float, default=300.0, help="zoo: wall-time budget for generate")
    p.add_argument("--steps-json", type=Path, default=None, help="zoo: the steps stage's JSON, for sizing")
    p.add_argument("--epochs", type=int, default=None, help="zoo: this many epochs (no sizing)")
    p.add_argument("--device", default=DEVICE, help="cpu: a smoke test (TRITON_INTERPRET=1; steps stage)")
    args = p.parse_args()
    DEVICE = args.device
    if args.stage == "profile":
        args.models = max(args.models)
    stages = {"compile": compile_sm90, "warm": warm, "check": check, "steps": steps, "profile": profile, "zoo": zoo}
    stages[args.stage](args)


if __name__ == "__main__":
    main()
