"""Permutation augmentation: one precomputed gather vs. a naive per-layer Python permutation.

Times, per call, (a) the naive way of the original repos (per sample: unflatten, draw a permutation per
group, permute every tensor it touches with ``np.take``, re-flatten), (b) ``Permutation`` with a
precomputed table (one flat ``np.take`` for the whole batch), (c) the same on torch CPU tensors
(``torch.gather``), (d) ``Permutation(n_precomputed=None)``: fresh permutations per call, as one batch
gather (CNN-s) or tensor by tensor with precomputed-free ``np.take`` (ResNet-18). Workloads: a batch of
256 CNN-s vectors (D = 2,464) and one ResNet-18 vector (D = 11,173,962 + 9,600 BN buffers).

Run: ``python benchmarks/transforms.py [--repeats N]``; prints a Markdown table of the best and the
median call time. torch is limited to one thread so that it compares like for like with numpy
(single-threaded gathers); the best time is the robust figure on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from modelzoos.architectures import Layout, build_model
from modelzoos.transforms import Permutation, PermutationSpec


def naive_permutation(spec: PermutationSpec, flat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One vector, the per-layer way: tensors of the state dict permuted one by one, then re-flattened."""
    state = {e.name: flat[e.offset : e.offset + e.numel].reshape(e.shape) for e in spec.layout.entries}
    for group in spec.groups:
        perm = rng.permutation(group.size)
        for member in group.members:
            tensor, axis = state[member.entry.name], member.axis
            blocks = tensor.reshape(*tensor.shape[:axis], group.size, member.block, *tensor.shape[axis + 1 :])
            state[member.entry.name] = np.take(blocks, perm, axis=axis).reshape(tensor.shape)
    return np.concatenate([state[e.name].ravel() for e in spec.layout.entries])


def naive_batch(spec: PermutationSpec, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.stack([naive_permutation(spec, row, rng) for row in batch])


def time_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(best, median) wall time of one call in ms, after a warm-up call (allocations, caches)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times), 1e3 * statistics.median(times)


def workload(arch: str, channels: int, batch: int, n_precomputed: int, repeats: int) -> list[tuple]:
    layout = Layout.of(build_model(arch, in_channels=channels, num_classes=10, activation="relu"))
    spec = PermutationSpec.of(layout, arch)
    x = np.random.default_rng(0).standard_normal((batch, layout.size)).astype(np.float32)
    start = time.perf_counter()
    table = Permutation(spec, n_precomputed=n_precomputed, seed=0)
    setup_ms = 1e3 * (time.perf_counter() - start)
    fresh = Permutation(spec, n_precomputed=None)
    path = "tensor by tensor" if layout.size > fresh.axis_by_axis_above else "batch gather"
    xt = torch.from_numpy(x)
    rng = np.random.default_rng(1)
    # sanity: every method returns a rearrangement of the input
    for out in (naive_batch(spec, x[:1], rng), table(x[:1], rng), fresh(x[:1], rng)):
        assert np.array_equal(np.sort(out, axis=1), np.sort(x[:1], axis=1))
    methods = [
        ("naive per-layer Python (numpy)", lambda: naive_batch(spec, x, rng)),
        (f"Permutation gather, numpy (table of {n_precomputed})", lambda: table(x, rng)),
        (f"Permutation gather, torch CPU (table of {n_precomputed})", lambda: table(xt, rng)),
        (f"Permutation on the fly (n_precomputed=None, {path}), numpy", lambda: fresh(x, rng)),
    ]
    rows, naive_ms = [], None
    for name, fn in methods:
        best, median = time_ms(fn, repeats)
        naive_ms = naive_ms or best
        rows.append((f"{arch} (D={layout.size:,})", batch, name, best, median, 1e3 * best / batch, naive_ms / best))
    rows.append((f"{arch} (D={layout.size:,})", n_precomputed, "one-time table precomputation", setup_ms, setup_ms,
                 1e3 * setup_ms / n_precomputed, float("nan")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = workload("cnn", 1, 256, 1000, args.repeats) + workload("resnet18", 3, 1, 4, max(3, args.repeats // 4))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Machine: {os.cpu_count()}-core CPU ({platform.machine()}), numpy {np.__version__}, "
          f"torch {torch.__version__} (1 thread), load average {load:.1f}; {args.repeats} calls per CNN-s row.\n")
    print("| network | batch / P | method | best ms per call | median ms | best µs per vector | speed-up vs naive |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for network, batch, name, best, median, per_vector, speedup in rows:
        speed = "" if speedup != speedup else f"{speedup:.1f}×"
        print(f"| {network} | {batch} | {name} | {best:.2f} | {median:.2f} | {per_vector:,.1f} | {speed} |")


if __name__ == "__main__":
    main()
