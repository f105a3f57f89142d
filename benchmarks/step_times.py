"""Milliseconds per population training step on a GPU, by number of models, with and without CUDA graphs.

    python benchmarks/step_times.py [--models 1 10 100 1000] [--steps 200] [--profile 20]

MNIST-shaped batches of the ``mnist_cnn_seed`` models (batch 10); each row is printed when measured.
Also: ms per eager step of the reference engine (one model), seconds per val evaluation (10,000 images) of
all models, and with ``--profile K`` torch.profiler's top kernels of K eager steps of the largest population.
"""

from __future__ import annotations

import argparse
import time

import torch
from engines import TRAIN_FLOP, mnist_shaped
from torch.profiler import ProfilerActivity, profile

from modelzoos.architectures import get_architecture
from modelzoos.catalogue import get_zoo
from modelzoos.data import Split, load_image_data
from modelzoos.optimizers import OPTIMIZERS
from modelzoos.population import GroupSteps, PopulationCNN, data_order, evaluate, initial_groups
from modelzoos.training import numerics, train_reference


def timed(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=int, nargs="+", default=[1, 10, 100, 1000])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--profile", type=int, default=0)
    p.add_argument("--no-cudnn-benchmark", action="store_true", help="population: cuDNN's heuristic algorithms")
    p.add_argument("--no-reference", action="store_true")
    args = p.parse_args()
    dev = torch.device("cuda")
    flags = numerics(dev)  # sets cudnn.benchmark on CUDA, as the engines do
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    zoo = get_zoo("mnist_cnn_seed")
    data = mnist_shaped(load_image_data(get_zoo("digits_cnn_seed").data))
    bs = zoo.models()[0].batch_size
    n = args.steps * bs
    images, labels = data.train.images[:n].to(dev), data.train.labels[:n].to(dev)
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; numerics {flags}; "
          f"cudnn.benchmark {torch.backends.cudnn.benchmark}", flush=True)
    print("| models | CUDA graphs | ms per step | model-steps/s | TFLOP/s | val eval s |", flush=True)
    for m in args.models:
        t0 = time.perf_counter()
        (g,) = initial_groups(zoo, zoo.models()[:m], dev)
        net = PopulationCNN(get_architecture("cnn").layers, g.activation, flags["channels_last"])
        setup = time.perf_counter() - t0
        params = {k: v.detach() for k, v in g.params.items()}
        ev = timed(lambda: evaluate(net, params, data.val, dev))  # noqa: B023
        for graphs in (True, False):
            st = steps(g, net, images, labels, bs, graphs)
            first = timed(lambda: st.epoch(1))  # noqa: B023
            sec = timed(lambda: st.epoch(2))  # noqa: B023
            ms = 1e3 * sec / args.steps
            print(f"| {m} | {graphs} | {ms:.3f} | {m * 1e3 / ms:,.0f} | {m * bs * TRAIN_FLOP / ms / 1e9:.2f} | "
                  f"{ev:.2f} | (setup {setup:.1f} s, first epoch {first:.1f} s)", flush=True)
    if args.no_reference:
        return profile_steps(args, g, net, images, labels, bs)
    ref = train_reference(zoo, zoo.models()[0], type(data)(data.recipe, 10, Split(images.cpu(), labels.cpu()),
                                                            data.val, data.test, "x"), dev, stop=2)
    next(ref), next(ref)
    sec = timed(lambda: next(ref))
    print(f"reference engine, 1 model: {1e3 * sec / args.steps:.3f} ms per step incl. eval", flush=True)
    profile_steps(args, g, net, images, labels, bs)


def steps(g, net, images, labels, bs, graphs: bool) -> GroupSteps:
    """The engine's training steps of group ``g`` (data order as the population engine draws it)."""
    return GroupSteps(g, net.forward, images, labels, bs, graphs, data_order(g, labels.numel()))


def phase_times(g, net, images, labels, bs, steps: int = 20) -> None:
    """ms per phase of eager steps (CUDA events): batch gather, forward + loss, backward, optimizer."""
    import torch.nn.functional as F

    ev = [torch.cuda.Event(enable_timing=True) for _ in range(5)]
    total = [0.0] * 4
    step = torch.zeros((), dtype=torch.int64, device=images.device)
    for i in range(steps + 3):
        idx = torch.randint(0, labels.numel(), (g.m, bs), device=images.device)
        ev[0].record()
        x, y = images[idx], labels[idx]
        ev[1].record()
        logits = net.forward(g.params, x, None, g.p, step)
        losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)
        ev[2].record()
        losses.sum().backward()
        ev[3].record()
        step.add_(1)
        OPTIMIZERS["adam"].step(g.params, g.opt_state, g.lr, g.wd, step)
        ev[4].record()
        torch.cuda.synchronize()
        if i >= 3:
            for k in range(4):
                total[k] += ev[k].elapsed_time(ev[k + 1]) / steps
    print(f"eager step phases of {g.m} models (ms): gather {total[0]:.3f}, forward+loss {total[1]:.3f}, "
          f"backward {total[2]:.3f}, optimizer {total[3]:.3f}", flush=True)


def profile_steps(args, g, net, images, labels, bs) -> None:
    if not args.profile:
        return
    phase_times(g, net, images, labels, bs)
    st = steps(g, net, images[: args.profile * bs], labels[: args.profile * bs], bs, False)
    st.epoch(1)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        st.epoch(2)
        torch.cuda.synchronize()
    events = prof.key_averages()
    for key in ("self_device_time_total", "self_cuda_time_total", "cuda_time_total"):
        try:
            print(f"{args.profile} eager steps of {g.m} models, by {key}:", flush=True)
            print(events.table(sort_by=key, row_limit=18), flush=True)
            return
        except Exception as err:  # the sort key's name differs between torch versions
            print(f"(sort key {key}: {err!r})", flush=True)


if __name__ == "__main__":
    main()
