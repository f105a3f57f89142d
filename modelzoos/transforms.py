"""Weight-space augmentations on flat weight vectors, applied on the fly
(as the original's augmentations; docs/protocol.md lists where ours differ).

Values: a batch of flat float32 weight vectors, numpy ``[B, D]`` (what ``datasets``' "numpy" format
gives) or a torch tensor ``[B, D]``; a single vector ``[D]`` is accepted everywhere and handled as a
batch of one. Tokenised weights are a ``Tokens`` value (values ``[B, T, L]``, mask ``[B, T, L]``,
positions ``[B, T, 3]``). Transforms never modify their input; they return a new value.

Specs are separate from values: ``PermutationSpec`` (which axes of which entries permute together) and
``Tokenizer`` (where every token element sits in the flat vector) are computed once from a ``Layout``
and hold precomputed integer gather indices, so permuting (from a table) or tokenising a batch is one
gather.

Every transform is a callable ``transform(x, rng)`` with an explicit ``np.random.Generator``; draws are
independent per sample of a batch. ``Compose`` chains them. ``Augment`` is the one adapter between
batches and a transform: it gives every call a fresh generator (``batch_generator``: seeded from one draw
of the process's torch RNG, so DataLoader workers draw independent augmentations and the whole run is
reproducible from ``torch.manual_seed(s)`` or the DataLoader's ``generator``), and it serves torch
Datasets, DataLoaders (``collate``), Hugging Face datasets (a batch-dict callable for
``IterableDataset.map(fn, batched=True)`` and ``Dataset.set_transform(fn)``) and ``modelzoos.loading``.
A transform that returns ``Tokens`` gives three batch columns with their own dtypes (values float,
mask bool, positions int64).
For big rows (ResNet-18: 11.2M floats) use the numpy/torch paths: ``set_transform`` hands the callable
Python lists (one Python float per weight: a large cost per row before any augmentation).

Example::

    spec = PermutationSpec.of(layout, "cnn")
    augment = Augment(Compose([Permutation(spec, n_precomputed=1000, seed=0), GaussianNoise(0.1, True),
                               RandomErasing(), chunk_tokens(layout, 64), RandomWindow(12)]))
    loader = DataLoader(ds.with_format("numpy"), batch_size=256, num_workers=2, collate_fn=augment.collate)

Documented deviations from the original code: permutations are precomputed as P independent uniform
draws from the whole product group (WSL/SANE "random" mode first drew a few shuffles per layer and then
combined them); positions of ``tokens_per_neuron`` have SANE's three columns (global index, layer, row).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import default_collate

from modelzoos.architectures import Entry, Layout, get_architecture

Array = np.ndarray | torch.Tensor

_BLOCK = re.compile(r"^(layer\d+\.\d+)\.")  # torchvision residual block prefix, e.g. "layer2.0."
_ERASE_ATTEMPTS = 10  # as the original's WSL RandomErasingVector


class Transform(Protocol):
    """A weight-space augmentation: ``transform(x, rng) -> x'`` on a batch, never modifying ``x``."""

    def __call__(self, x: Any, rng: np.random.Generator) -> Any: ...


# ---------------------------------------------------------------------------------------------------------
# Array helpers (numpy primary, torch where cheap)
# ---------------------------------------------------------------------------------------------------------


def _is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _as_batch(x: Array, size: int | None = None) -> tuple[Array, bool]:
    """``[D]`` → ``[1, D]`` (and whether to squeeze back); checks the vector length against ``size``."""
    if isinstance(x, Tokens):
        raise TypeError("this transform works on flat weight vectors [B, D]; apply it before tokenising")
    if not _is_torch(x):
        x = np.asarray(x)
    if x.ndim not in (1, 2):
        raise ValueError(f"expected a flat weight vector [D] or a batch [B, D], got shape {tuple(x.shape)}")
    if size is not None and x.shape[-1] != size:
        raise ValueError(f"weight vectors have length {x.shape[-1]}, the spec expects D = {size}")
    return (x[None], True) if x.ndim == 1 else (x, False)


def _unbatch(x: Array, single: bool) -> Array:
    return x[0] if single else x


def _copy(x: Array) -> Array:
    return x.clone() if _is_torch(x) else x.copy()


def _like(values: np.ndarray, x: Array) -> Array:
    """Numpy draws as the backend, device and dtype of ``x``."""
    if _is_torch(x):
        return torch.from_numpy(values).to(device=x.device, dtype=x.dtype)
    return values.astype(x.dtype, copy=False)


# ---------------------------------------------------------------------------------------------------------
# Permutation spec: which axes of which entries permute together
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """One axis of one layout entry under a permutation group.

    The axis has ``group.size * block`` elements in blocks of ``block`` contiguous indices; after permuting,
    block ``c`` holds the original block π(c).
    ``block`` > 1 only for the input of a linear layer after a channel-major flatten (conv → flatten → fc).
    """

    entry: Entry
    axis: int
    block: int = 1


@dataclass(frozen=True)
class PermutationGroup:
    """Hidden units that one permutation π of ``range(size)`` reorders, and every axis it acts on.

    ``name`` lists the layers whose outputs form the group (several for channels tied by residual adds).
    """

    name: str
    size: int
    members: tuple[Axis, ...]


@dataclass(frozen=True)
class _Module:
    name: str
    entries: tuple[Entry, ...]

    def get(self, suffix: str) -> Entry | None:
        return next((e for e in self.entries if e.name == f"{self.name}.{suffix}"), None)

    @property
    def is_norm(self) -> bool:
        return self.get("running_mean") is not None

    @property
    def weight(self) -> Entry:
        entry = self.get("weight")
        if entry is None or len(entry.shape) not in (2, 4):
            raise ValueError(f"module {self.name!r} is neither a Conv2d, a Linear nor a BatchNorm; "
                             "permutation specs and tokenisers know only these")
        return entry


def _modules(layout: Layout) -> list[_Module]:
    """Layout entries grouped by module (``conv1.weight``, ``conv1.bias`` → ``conv1``), in layout order."""
    modules: list[_Module] = []
    for entry in layout.entries:
        name = entry.name.rsplit(".", 1)[0]
        if modules and modules[-1].name == name:
            modules[-1] = _Module(name, (*modules[-1].entries, entry))
        else:
            modules.append(_Module(name, (entry,)))
    return modules


def _layers_with_norms(layout: Layout) -> list[tuple[_Module, _Module | None]]:
    """(Conv2d/Linear module, the BatchNorm right after it or None); a BatchNorm follows its conv in
    state-dict order (torchvision: ``conv1``/``bn1``, ``downsample.0``/``downsample.1``)."""
    pairs: list[tuple[_Module, _Module | None]] = []
    for module in _modules(layout):
        if module.is_norm:
            if not pairs or pairs[-1][1] is not None:
                raise ValueError(f"batch norm {module.name!r} does not follow a conv or linear layer")
            pairs[-1] = (pairs[-1][0], module)
        else:
            _ = module.weight  # validates the module kind
            pairs.append((module, None))
    return pairs


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(self, node: tuple[str, str]) -> tuple[str, str]:
        self.parent.setdefault(node, node)
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def union(self, a: tuple[str, str], b: tuple[str, str]) -> None:
        self.parent[self.find(a)] = self.find(b)


@dataclass(frozen=True)
class PermutationSpec:
    """Function-preserving permutation symmetries of a zoo network (docs/protocol.md, "weight-space permutations").

    Every hidden unit space (conv channels, linear units) is a ``PermutationGroup``; the network input
    and the output layer's units are never permuted. Derived from the layout names:

    - a layer's output units are the next layer's input units (sequential CNNs, block internals);
    - a BatchNorm (weight, bias, running mean/var) shares its conv's output channels;
    - a residual block ``layerS.B`` ties its input to its output (identity skip) or its main path's
      input/output to the ``downsample`` path's input/output; blocks chain, the stem feeds the first block
      and the last block feeds ``fc``.

    So CNN-s/CNN-m have 4 groups (conv1, conv2, conv3, fc1) and ResNet-18 has 12: four residual streams
    (stem + layer1, then one per later stage with its downsample) and one per block's inner conv1/bn1.
    """

    architecture: str
    layout: Layout
    groups: tuple[PermutationGroup, ...]

    @property
    def size(self) -> int:
        """Length D of the flat vectors the spec permutes."""
        return self.layout.size

    @classmethod
    def of(cls, layout: Layout, architecture: str) -> PermutationSpec:
        residual = get_architecture(architecture).residual  # its layout must then hold torchvision BasicBlocks
        pairs = _layers_with_norms(layout)
        uf = _UnionFind()

        def chain(layers: list[_Module]) -> tuple[tuple[str, str], tuple[str, str]]:
            for a, b in itertools.pairwise(layers):
                uf.union(("out", a.name), ("in", b.name))
            return ("in", layers[0].name), ("out", layers[-1].name)

        # Units in layout order: a plain layer, or a residual block (main path + optional downsample path).
        units: dict[str, list[_Module]] = {}
        blocks: set[str] = set()
        for layer, _ in pairs:
            match = _BLOCK.match(layer.name)
            blocks.update([match[1]] if match else [])
            units.setdefault(match[1] if match else layer.name, []).append(layer)
        ends = []
        for name, layers in units.items():
            main_in, main_out = chain([m for m in layers if ".downsample." not in m.name])
            skip = [m for m in layers if ".downsample." in m.name]
            if skip:
                skip_in, skip_out = chain(skip)
                uf.union(skip_in, main_in)
                uf.union(skip_out, main_out)
            elif name in blocks:
                uf.union(main_in, main_out)  # identity skip: the residual add ties input and output channels
            ends.append((main_in, main_out))
        for (_, a_out), (b_in, _) in itertools.pairwise(ends):
            uf.union(a_out, b_in)
        if bool(blocks) != residual:
            raise ValueError(f"layout does not fit architecture {architecture!r}: "
                             f"{'has' if blocks else 'lacks'} residual blocks")

        fixed = {uf.find(ends[0][0]), uf.find(ends[-1][1])}
        producers: dict[tuple[str, str], list[str]] = {}
        sizes: dict[tuple[str, str], int] = {}
        members: dict[tuple[str, str], list[Axis]] = {}
        for layer, norm in pairs:
            root = uf.find(("out", layer.name))
            if root in fixed:
                continue
            n = layer.weight.shape[0]
            if sizes.setdefault(root, n) != n:
                raise ValueError(f"{layer.name!r} has {n} outputs, but channels tied to it have {sizes[root]}")
            producers.setdefault(root, []).append(layer.name)
            tied = [layer.weight, layer.get("bias"), *(norm.entries if norm else ())]
            members.setdefault(root, []).extend(Axis(e, 0) for e in tied if e is not None)
        for layer, _ in pairs:
            root = uf.find(("in", layer.name))
            if root in fixed:
                continue
            width, n = layer.weight.shape[1], sizes[root]
            if width % n:
                raise ValueError(f"{layer.name!r} has {width} inputs, not a multiple of the {n} units feeding it")
            members[root].append(Axis(layer.weight, 1, width // n))
        groups = tuple(PermutationGroup("+".join(producers[r]), sizes[r], tuple(members[r])) for r in producers)
        return cls(architecture, layout, groups)


def _draw_group_permutations(spec: PermutationSpec, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """One permutation [n, size] per group, in group order (every permutation path draws exactly these)."""
    return [rng.permuted(np.tile(np.arange(g.size, dtype=np.int64), (n, 1)), axis=1) for g in spec.groups]


def permutation_index(spec: PermutationSpec, rng: np.random.Generator, count: int | None = None) -> np.ndarray:
    """Random gather indices: ``flat[index]`` is the model with every group's units permuted.

    Returns int64 ``[D]`` (or ``[count, D]`` for ``count`` independent permutations, drawn vectorised).
    Built as in the protocol's fast path: the reference vector ``0..D-1`` is permuted entry by entry.
    """
    n = 1 if count is None else count
    # Per entry and axis, the source position of every target position: a permutation acts on one axis,
    # so the entry's gather index is offset + Σ_axis map_axis · stride_axis (one broadcast sum).
    maps: dict[str, dict[int, np.ndarray]] = {}
    for group, perms in zip(spec.groups, _draw_group_permutations(spec, rng, n), strict=True):
        for member in group.members:
            expanded = (perms[:, :, None] * member.block + np.arange(member.block)).reshape(n, -1)
            maps.setdefault(member.entry.name, {})[member.axis] = expanded
    index = np.empty((n, spec.size), dtype=np.int64)
    for entry in spec.layout.entries:
        if entry.name not in maps:  # e.g. the output layer's bias
            index[:, entry.offset : entry.offset + entry.numel] = np.arange(entry.offset, entry.offset + entry.numel)
            continue
        ndim, strides = len(entry.shape), np.cumprod((*entry.shape[1:], 1)[::-1])[::-1]
        source = np.int64(entry.offset)
        for axis, (width, stride) in enumerate(zip(entry.shape, strides, strict=True)):
            along = maps[entry.name].get(axis, np.arange(width, dtype=np.int64)[None])
            source = source + (along * stride).reshape(len(along), *(1,) * axis, width, *(1,) * (ndim - axis - 1))
        index[:, entry.offset : entry.offset + entry.numel] = np.broadcast_to(source, (n, *entry.shape)).reshape(n, -1)
    return index[0] if count is None else index


class Permutation:
    """Random function-preserving permutation per sample, as one gather from a precomputed table.

    ``n_precomputed`` permutations are drawn once from ``seed`` and stored as gather indices
    (``indices``: ``[P, D]``, int32 while D < 2³¹): P·D·4 bytes, e.g. 9.9 MB for 1,000 CNN-s permutations
    but 45 MB *each* for ResNet-18. Each access draws one table row per sample (with replacement), so two
    calls give two views as in the protocol.

    ``n_precomputed=None`` draws fresh permutations on every call instead, with no table. Vectors up to
    ``axis_by_axis_above`` entries get gather indices built for the whole batch and applied as one gather;
    longer ones (ResNet-18) are permuted tensor by tensor, axis by axis, which copies contiguous runs and
    beats an element-wise gather of 11M entries on a CPU. Both ways give identical results for the same
    generator. Measured (BENCHMARKS.md, "Weight-space augmentations"): the table gather is the fast path for
    CNN-s batches, and a ResNet-18 vector is permuted faster on the fly than from a table, so use
    ``n_precomputed=None`` there.
    """

    axis_by_axis_above = 1 << 20

    def __init__(self, spec: PermutationSpec, n_precomputed: int | None = 1000, seed: int = 0,
                 max_bytes: int = 2 << 30) -> None:
        self.spec = spec
        self.indices: np.ndarray | None = None
        self._device_indices: dict[str, torch.Tensor] = {}
        if n_precomputed is None:
            return
        dtype = np.int32 if spec.size < 2**31 else np.int64
        need = n_precomputed * spec.size * np.dtype(dtype).itemsize
        if n_precomputed < 1 or need > max_bytes:
            raise ValueError(f"n_precomputed={n_precomputed} permutations of D={spec.size} need {need / 2**30:.2f} GiB "
                             f"(limit max_bytes={max_bytes / 2**30:.2f} GiB); pass a positive n_precomputed that "
                             "fits, or n_precomputed=None to draw each permutation on the fly")
        rng = np.random.default_rng(seed)
        chunk = max(1, (1 << 22) // spec.size)
        self.indices = np.concatenate([
            permutation_index(spec, rng, count=min(chunk, n_precomputed - start)).astype(dtype)
            for start in range(0, n_precomputed, chunk)
        ])

    def __repr__(self) -> str:
        n = "on the fly" if self.indices is None else len(self.indices)
        return f"Permutation({self.spec.architecture}, D={self.spec.size}, n_precomputed={n})"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_device_indices": {}}

    def apply(self, batch: Array, perms: list[np.ndarray]) -> Array:
        """Batch [B, D] permuted by given permutations: ``perms[g]`` [B, size of group g] per group of the spec;
        every tensor of every sample along its grouped axes (``np.take`` / ``index_select``)."""
        axes: dict[str, list[tuple[int, int, int]]] = {}
        for g, group in enumerate(self.spec.groups):
            for member in group.members:
                axes.setdefault(member.entry.name, []).append((member.axis, member.block, g))
        if _is_torch(batch):
            perms = [torch.from_numpy(p).to(batch.device) for p in perms]
        out = torch.empty_like(batch) if _is_torch(batch) else np.empty_like(batch)  # every entry is written
        for row in range(batch.shape[0]):
            for entry in self.spec.layout.entries:
                part = batch[row, entry.offset : entry.offset + entry.numel]
                for axis, block, g in axes.get(entry.name, ()):
                    size = perms[g].shape[1]
                    blocked = part.reshape(*entry.shape[:axis], size, block, *entry.shape[axis + 1 :])
                    part = (blocked.index_select(axis, perms[g][row]) if _is_torch(blocked) else
                            np.take(blocked, perms[g][row], axis=axis))
                out[row, entry.offset : entry.offset + entry.numel] = part.reshape(-1)
        return out

    def __call__(self, x: Array, rng: np.random.Generator) -> Array:
        batch, single = _as_batch(x, self.spec.size)
        if self.indices is None and self.spec.size > self.axis_by_axis_above:
            perms = _draw_group_permutations(self.spec, rng, batch.shape[0])
            return _unbatch(self.apply(batch, perms), single)
        if self.indices is None:
            index: Any = permutation_index(self.spec, rng, count=batch.shape[0])
            if _is_torch(batch):
                index = torch.from_numpy(index).to(batch.device)
        else:
            rows = rng.integers(0, len(self.indices), size=batch.shape[0])
            if _is_torch(batch):
                key = str(batch.device)
                if key not in self._device_indices:
                    self._device_indices[key] = torch.from_numpy(self.indices).to(batch.device, torch.int64)
                index = self._device_indices[key][torch.from_numpy(rows).to(batch.device)]
            else:
                index = self.indices[rows]
        if _is_torch(batch):
            return _unbatch(torch.gather(batch, 1, index), single)
        # one flat take (several times faster than take_along_axis): row b reads from b·D + index[b]
        dtype = np.int32 if batch.size < 2**31 else np.int64
        offsets = np.arange(0, batch.size, batch.shape[1], dtype=dtype)[:, None]
        out = np.take(np.ascontiguousarray(batch).reshape(-1), index.astype(dtype, copy=False) + offsets)
        return _unbatch(out, single)


# ---------------------------------------------------------------------------------------------------------
# Noise and erasing on the flat vector
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianNoise:
    """Additive ``w + σ·ε`` or multiplicative ``w·(1 + σ·ε)`` noise, ε ~ N(0, 1) per element (§10.2)."""

    sigma: float
    multiplicative: bool = False

    def __post_init__(self) -> None:
        if not self.sigma >= 0:
            raise ValueError(f"sigma must be ≥ 0, got {self.sigma}")

    def __call__(self, x: Array, rng: np.random.Generator) -> Array:
        _as_batch(x)
        eps = _like(rng.standard_normal(tuple(x.shape), dtype=np.float32), x)
        return x * (1 + self.sigma * eps) if self.multiplicative else x + self.sigma * eps


@dataclass(frozen=True)
class RandomErasing:
    """Random erasing on the flat vector (the original WSL ``RandomErasingVector``), per sample.

    With probability ``p``: draw s ~ U(scale) and erase n = ⌊D·s⌋ entries, filled with ``value`` or with
    N(0, 1) draws (``value="random"``). ``mode="block"``: a contiguous block at a uniform start in
    [0, D), kept only if start + n < D, else s and start are drawn again (at most 10 attempts, then no
    erasing). ``mode="scatter"``: n uniform indices drawn with replacement.
    """

    p: float = 0.5
    scale: tuple[float, float] = (0.02, 0.33)
    value: float | str = 0.0
    mode: str = "block"

    def __post_init__(self) -> None:
        if not 0 <= self.p <= 1:
            raise ValueError(f"p must be in [0, 1], got {self.p}")
        low, high = self.scale
        if not 0 <= low <= high <= 1:
            raise ValueError(f"scale must be (min, max) with 0 ≤ min ≤ max ≤ 1, got {self.scale}")
        if isinstance(self.value, str) and self.value != "random":
            raise ValueError(f"value must be a number or 'random', got {self.value!r}")
        if self.mode not in ("block", "scatter"):
            raise ValueError(f"mode must be 'block' or 'scatter', got {self.mode!r}")

    def __call__(self, x: Array, rng: np.random.Generator) -> Array:
        batch, single = _as_batch(x)
        out, size = _copy(batch), batch.shape[1]
        for row in range(batch.shape[0]):
            if rng.random() >= self.p:
                continue
            where: slice | Array | None = None
            if self.mode == "scatter":
                n = int(size * rng.uniform(*self.scale))
                where = rng.integers(0, size, size=n)
                where = torch.from_numpy(where).to(batch.device) if _is_torch(batch) else where
            else:
                for _ in range(_ERASE_ATTEMPTS):
                    n, start = int(size * rng.uniform(*self.scale)), int(rng.integers(0, size))
                    if start + n < size:
                        where = slice(start, start + n)
                        break
            if where is None:
                continue
            if self.value == "random":
                out[row, where] = _like(rng.standard_normal(n, dtype=np.float32), batch)
            else:
                out[row, where] = float(self.value)
        return _unbatch(out, single)


# ---------------------------------------------------------------------------------------------------------
# Tokenisation (docs/baselines.md: neuron tokens of the hyper-representation, windows of SANE)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Tokens:
    """Tokenised weights: ``values`` [..., T, L] (zero where padded), ``mask`` [..., T, L] (True on real
    weights), ``positions`` [..., T, 3] int64 = (global token index, layer index, row index in the layer).

    Leading dimensions are the batch; ``mask``/``positions`` may be broadcast (read-only) views.
    """

    values: Array
    mask: Array
    positions: Array


def _rows(entry: Entry) -> np.ndarray:
    """Flat indices of an entry as [rows, row length] (output unit major)."""
    return entry.offset + np.arange(entry.numel, dtype=np.int64).reshape(entry.shape[0], -1)


@dataclass(frozen=True, eq=False)
class Tokenizer:
    """Precomputed gather indices from flat vectors [..., D] to ``Tokens`` and back.

    ``index`` [T, L] int64: flat index of each token element, D under padding (tokenising appends one
    zero to the vector, so a batch is tokenised by a single ``take``); ``mask`` [T, L] (``index < D``);
    ``positions`` [T, 3]. Build with ``tokens_per_neuron`` or ``chunk_tokens``. A ``Tokenizer`` is itself
    a transform (``tokenizer(x, rng)``), so it can sit inside ``Compose`` between flat and token transforms.
    """

    index: np.ndarray
    mask: np.ndarray
    positions: np.ndarray
    size: int
    _device: dict = field(default_factory=dict, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"Tokenizer(tokens={self.num_tokens}, token_size={self.token_size}, D={self.size})"

    @property
    def num_tokens(self) -> int:
        return self.index.shape[0]

    @property
    def token_size(self) -> int:
        return self.index.shape[1]

    @property
    def covered(self) -> np.ndarray:
        """Boolean [D]: entries that appear in some token (False e.g. for BN entries with ``ignore_bn``)."""
        covered = np.zeros(self.size + 1, dtype=bool)
        covered[self.index] = True
        return covered[: self.size]

    def _arrays(self, x: Array, inverse: bool = False) -> tuple[Array, ...]:
        """(index, mask, positions) on the backend and device of ``x``; with ``inverse`` also (source,
        target): where the real weights sit in the flattened [T·L] sequence, and their indices in [D]."""
        key = (str(x.device) if _is_torch(x) else "numpy", inverse)
        if key not in self._device:
            arrays: tuple[np.ndarray, ...] = (self.index, self.mask, self.positions)
            if inverse:
                source = np.flatnonzero(self.mask)
                arrays = (*arrays, source, self.index.ravel()[source])
            self._device[key] = tuple(torch.tensor(a, device=x.device) for a in arrays) if _is_torch(x) else arrays
        return self._device[key]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_device": {}}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def tokenize(self, x: Array) -> Tokens:
        """Flat vectors [..., D] → ``Tokens`` with values [..., T, L], one gather."""
        if x.shape[-1] != self.size:
            raise ValueError(f"weight vectors have length {x.shape[-1]}, the tokenizer expects D = {self.size}")
        index, mask, positions = self._arrays(x)
        lead, shape = tuple(x.shape[:-1]), tuple(index.shape)
        if _is_torch(x):
            padded = torch.cat([x, x.new_zeros(*lead, 1)], dim=-1)
            values = torch.index_select(padded, -1, index.reshape(-1)).reshape(*lead, *shape)
            return Tokens(values, mask.expand(*lead, *shape), positions.expand(*lead, *positions.shape))
        x = np.asarray(x)
        padded = np.concatenate([x, np.zeros((*lead, 1), dtype=x.dtype)], axis=-1)
        return Tokens(np.take(padded, index, axis=-1), np.broadcast_to(mask, lead + shape),
                      np.broadcast_to(positions, lead + positions.shape))

    def __call__(self, x: Array, rng: np.random.Generator | None = None) -> Tokens:
        return self.tokenize(x)

    def detokenize(self, tokens: Tokens | Array, base: Array | None = None) -> Array:
        """``Tokens`` (or bare values [..., T, L]) → flat vectors [..., D]; the inverse of ``tokenize``.

        Tokens are placed by their global position (``positions[..., 0]``), so a window restores its part
        of the vector. Entries no token covers come from ``base`` (broadcast to [..., D]) or are zero.
        """
        if isinstance(tokens, Tokens):
            values, positions = tokens.values, tokens.positions[..., 0]
        else:
            values, positions = tokens, None
            if tuple(values.shape[-2:]) != self.index.shape:
                raise ValueError(f"bare token values must be [..., {self.num_tokens}, {self.token_size}] (the whole "
                                 f"sequence), got {tuple(values.shape)}; pass Tokens to detokenize a window")
        index, mask, _, source, target = self._arrays(values, inverse=True)
        lead = tuple(values.shape[:-2])
        n, torch_ = math.prod(lead), _is_torch(values)
        values = values.reshape(n, *values.shape[-2:])
        if base is None:
            out = values.new_zeros(n, self.size) if torch_ else np.zeros((n, self.size), dtype=values.dtype)
        elif torch_:
            out = base.to(values).expand(*lead, self.size).reshape(n, self.size).clone(
                memory_format=torch.contiguous_format)
        else:
            out = np.array(np.broadcast_to(base, (*lead, self.size)), dtype=values.dtype).reshape(n, self.size)
        whole = torch.arange(self.num_tokens, device=values.device) if torch_ else np.arange(self.num_tokens)
        if positions is None or (values.shape[1] == self.num_tokens and bool((positions == whole).all())):
            out[:, target] = values.reshape(n, -1)[:, source]  # the whole sequence: one gather, one scatter
        else:
            positions = positions.reshape(n, -1)
            for row in range(n):  # windows: scatter each sample's tokens by their global position
                rows = positions[row]
                out[row, index[rows][mask[rows]]] = values[row][mask[rows]]
        return out.reshape(*lead, self.size)


def _pack(layers: list[np.ndarray], token_size: int | None, size: int) -> Tokenizer:
    """Rows of flat indices per layer → padded (and with ``token_size``, chunked) token gather indices."""
    width = token_size or max(rows.shape[1] for rows in layers)
    chunks = [-(-rows.shape[1] // width) for rows in layers]
    counts = [rows.shape[0] * k for rows, k in zip(layers, chunks, strict=True)]
    index = np.full((sum(counts), width), size, dtype=np.int64)
    positions = np.zeros((sum(counts), 3), dtype=np.int64)
    positions[:, 0] = np.arange(sum(counts))
    start = 0
    for layer, (rows, k, count) in enumerate(zip(layers, chunks, counts, strict=True)):
        index[start : start + count].reshape(rows.shape[0], k * width)[:, : rows.shape[1]] = rows
        positions[start : start + count, 1] = layer
        positions[start : start + count, 2] = np.repeat(np.arange(rows.shape[0]), k)
        start += count
    arrays = (index, index < size, positions)
    for a in arrays:
        a.setflags(write=False)
    return Tokenizer(*arrays, size=size)


def tokens_per_neuron(layout: Layout, include_bn: bool = True) -> Tokenizer:
    """One token per output neuron/channel of every Conv2d/Linear (WSL 2021): its incoming weights
    (``weight[row]`` flattened), its bias, and with ``include_bn`` the following BatchNorm's weight,
    bias, running mean and running var of that channel; zero-padded to the longest token.

    Positions: (global token index, layer index, row index). CNN-s (c=1): 48 tokens of length 201.
    """
    layers = []
    for layer, norm in _layers_with_norms(layout):
        parts = [layer.weight, layer.get("bias"), *(norm.entries if norm is not None and include_bn else ())]
        layers.append(np.hstack([_rows(e) for e in parts if e is not None]))
    return _pack(layers, None, layout.size)


def chunk_tokens(layout: Layout, token_size: int, ignore_bn: bool = False) -> Tokenizer:
    """SANE tokenisation (``tokenize_checkpoint``): each output row of every weight (with its bias
    appended) is chunked into tokens of ``token_size``, the last chunk zero-padded and masked.

    As in SANE, every weight and every running statistic is its own layer (a BatchNorm gives three:
    weight + bias, running mean, running var), or is skipped with ``ignore_bn``. Positions: (global
    token index, layer index, row index); the chunks of one row share the row index.
    """
    if token_size < 1:
        raise ValueError(f"token_size must be ≥ 1, got {token_size}")
    layers = []
    for module in _modules(layout):
        if ignore_bn and module.is_norm:
            continue
        weight = module.get("weight")
        for entry in module.entries:
            if entry is weight:
                bias = module.get("bias")
                layers.append(np.hstack([_rows(entry)] + ([_rows(bias)] if bias is not None else [])))
            elif not (entry.name.endswith(".bias") and weight is not None):
                layers.append(_rows(entry))
    return _pack(layers, token_size, layout.size)


@dataclass(frozen=True)
class RandomWindow:
    """A random contiguous window of ``window`` tokens per sample, with its mask and positions (SANE
    ``WindowCutter``); the start is uniform over the T - window + 1 possible starts."""

    window: int

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be ≥ 1, got {self.window}")

    def __call__(self, tokens: Tokens, rng: np.random.Generator) -> Tokens:
        if not isinstance(tokens, Tokens):
            raise TypeError(f"RandomWindow works on Tokens; got {type(tokens).__name__} (tokenise first)")
        values, mask, positions = tokens.values, tokens.mask, tokens.positions
        single = values.ndim == 2
        if single:
            values, mask, positions = values[None], mask[None], positions[None]
        if values.ndim != 3:
            raise ValueError(f"token values must be [T, L] or [B, T, L], got shape {tuple(values.shape)}")
        batch, length = values.shape[0], values.shape[1]
        if self.window > length:
            raise ValueError(f"window of {self.window} tokens is longer than the sequence of {length} tokens")
        starts = rng.integers(0, length - self.window + 1, size=batch)
        rows = starts[:, None, None] + np.arange(self.window)[None, :, None]  # [B, W, 1]
        if _is_torch(values):
            rows = torch.from_numpy(rows).to(values.device)
            out = [torch.gather(a, 1, rows.expand(batch, self.window, a.shape[2])) for a in (values, mask, positions)]
        else:
            out = [np.take_along_axis(a, rows, 1) for a in (values, mask, positions)]
        return Tokens(*(a[0] for a in out)) if single else Tokens(*out)


# ---------------------------------------------------------------------------------------------------------
# Composition, the RNG convention, and the adapter to DataLoaders and Hugging Face datasets
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compose:
    """Apply transforms in order with one generator: ``Compose([a, b])(x, rng) == b(a(x, rng), rng)``."""

    transforms: tuple[Transform, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", tuple(self.transforms))

    def __call__(self, x: Any, rng: np.random.Generator) -> Any:
        for transform in self.transforms:
            x = transform(x, rng)
        return x


def batch_generator(seed: int = 0) -> np.random.Generator:
    """The generator of one call (one batch): ``np.random.default_rng([seed, d])``, ``d`` one draw of this
    process's torch RNG.

    This is the package's one RNG convention between data loading and transforms. DataLoader workers seed
    their torch RNG with ``base_seed + worker_id``, the base seed drawn from the main process's RNG (or the
    DataLoader's ``generator``) each time an iterator starts; so workers draw independently, every epoch
    draws anew, and a run is reproducible from ``torch.manual_seed(s)`` with or without workers. Nothing is
    kept between calls: forking, pickling or restarting workers cannot repeat or skip a stream.
    """
    if seed < 0:
        raise ValueError(f"seed must be ≥ 0, got {seed}")
    return np.random.default_rng([seed, int(torch.empty((), dtype=torch.int64).random_().item())])


def _to_torch(x: Any) -> Any:
    if isinstance(x, Tokens):
        return Tokens(*(_to_torch(a) for a in (x.values, x.mask, x.positions)))
    return torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x


def _stack(rows: Sequence[Any]) -> Array:
    if _is_torch(rows[0]):
        return torch.stack(list(rows))
    return np.stack([np.asarray(r, dtype=np.float32) for r in rows])


def _column(values: Any) -> Array:
    """A batch column (list of lists, list of arrays, 2-D or object array, tensor) → [B, D] array."""
    if _is_torch(values) or (isinstance(values, np.ndarray) and values.dtype != object):
        return values
    return _stack(list(values))


def _dense(x: Array) -> Array:
    return np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x.contiguous()


TOKEN_COLUMNS = ("mask", "positions")  # the batch keys of Tokens besides the values (which keep the column's name)


class Augment:
    """The adapter between batches (torch Datasets, DataLoaders, ``datasets``) and a ``transform(x, rng)``.

    Every call draws a fresh generator (``batch_generator(seed)``: the package's one RNG convention), so
    the adapter holds no state. Uses:

    - ``augment(x)`` on an array/tensor ``[D]`` or ``[B, D]`` (e.g. in ``Dataset.__getitem__``);
    - ``augment(batch)`` on a batch dict: the ``column`` is augmented, other keys pass through. A transform
      may return ``Tokens``: they become three keys, ``column`` (values, float), ``"mask"`` (bool) and
      ``"positions"`` (int64), each with its own dtype. This is the function for
      ``IterableDataset.map(augment, batched=True)``, ``Dataset.set_transform(augment)`` (which receives
      Python lists: avoid for big rows, see the module docstring), ``loading.WeightsDataset`` and
      ``loading.iterable_loader`` (which wrap their ``transform`` in it);
    - ``DataLoader(ds.with_format("numpy"), batch_size=B, collate_fn=augment.collate)``: stacks the
      samples, augments the whole batch at once and returns torch tensors.
    """

    def __init__(self, transform: Transform, *, column: str = "weights", seed: int = 0) -> None:
        if seed < 0:
            raise ValueError(f"seed must be ≥ 0, got {seed}")
        self.transform, self.column, self.seed = transform, column, seed

    def __repr__(self) -> str:
        return f"Augment({self.transform!r}, column={self.column!r}, seed={self.seed})"

    def __call__(self, batch: Any) -> Any:
        if not isinstance(batch, Mapping):
            return self.transform(batch, batch_generator(self.seed))
        if self.column not in batch:
            raise KeyError(f"batch has no column {self.column!r}; columns: {', '.join(batch)}")
        out = dict(batch)
        values = _column(batch[self.column])
        result = self.transform(values, batch_generator(self.seed))
        if isinstance(result, Tokens):
            clash = [k for k in TOKEN_COLUMNS if k in batch]
            if clash:
                raise ValueError(f"the transform returns Tokens, whose {clash} would replace the batch's own "
                                 f"column(s) of that name; drop or rename them")
            out[self.column], *rest = (_dense(a) for a in (result.values, result.mask, result.positions))
            out.update(zip(TOKEN_COLUMNS, rest, strict=True))
        else:
            out[self.column] = result
        if len(out[self.column]) != len(values):
            raise ValueError(f"transform {self.transform!r} returned {len(out[self.column])} rows for a batch of "
                             f"{len(values)}; it must keep the batch dimension")
        return out

    def collate(self, samples: Sequence[Any]) -> Any:
        """DataLoader ``collate_fn``: stack samples (dicts with ``column``, arrays or tensors), augment the
        batch, return torch tensors (other dict keys through ``default_collate``)."""
        if not isinstance(samples[0], Mapping):
            return _to_torch(self.transform(_stack(samples), batch_generator(self.seed)))
        rest = default_collate([{k: v for k, v in s.items() if k != self.column} for s in samples])
        out = self({self.column: _stack([s[self.column] for s in samples])})
        return {**rest, **{k: _to_torch(v) for k, v in out.items()}}


__all__ = [
    "TOKEN_COLUMNS",
    "Augment",
    "Axis",
    "Compose",
    "GaussianNoise",
    "Permutation",
    "PermutationGroup",
    "PermutationSpec",
    "RandomErasing",
    "RandomWindow",
    "Tokenizer",
    "Tokens",
    "Transform",
    "batch_generator",
    "chunk_tokens",
    "permutation_index",
    "tokens_per_neuron",
]
