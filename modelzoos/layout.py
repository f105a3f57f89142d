"""The flat weight layout of the zoo networks, and each architecture's shape as data (no torch needed).

A model state is stored as one flat float32 vector; ``Layout`` places every state-dict tensor in it.
``LAYOUTS`` gives the layout of every architecture from its shape alone (the CNNs' ``LayerSpec`` tables,
ResNet-18's stages), so that the catalogue, the zoo-directory and repository formats and ``modelzoos build``
work without importing torch; ``modelzoos.architectures`` builds the networks from the same tables, and a
test checks ``LAYOUTS`` against ``Layout.of`` of every built network.

Parameter names are stable (``conv1.weight``, ``fc2.bias``, torchvision's names for ResNet-18) and never
depend on dropout: the original public CNN class shifted module indices when dropout > 0 (docs/protocol.md,
Deviations).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any


@dataclass(frozen=True)
class LayerSpec:
    """One parameterised layer of a zoo CNN and what follows it.

    Stage order is the original's: layer → [max-pool 2×2] → [activation] → [dropout] (pooling before the
    activation, docs/protocol.md).
    """

    name: str
    kind: str  # "conv" (stride 1, no padding, with bias) | "linear" (flattens channel-major first)
    out: int  # output channels / units; the last layer's ``out`` is replaced by num_classes
    kernel: int = 0
    pool: bool = False
    act: bool = True
    dropout: bool = True


CNN_S = (  # CNN-s, for c×28×28 inputs
    LayerSpec("conv1", "conv", 8, kernel=5, pool=True),
    LayerSpec("conv2", "conv", 6, kernel=5, pool=True),
    LayerSpec("conv3", "conv", 4, kernel=2, dropout=False),
    LayerSpec("fc1", "linear", 20),
    LayerSpec("fc2", "linear", 10, act=False, dropout=False),
)
CNN_M = (  # CNN-m, for 3×32×32 inputs
    LayerSpec("conv1", "conv", 16, kernel=3, pool=True),
    LayerSpec("conv2", "conv", 32, kernel=3, pool=True),
    LayerSpec("conv3", "conv", 15, kernel=3, pool=True),
    LayerSpec("fc1", "linear", 20),
    LayerSpec("fc2", "linear", 10, act=False, dropout=False),
)
INPUT_SIZE = {"cnn": 28, "cnn_m": 32}  # the CNNs' input H = W in pixels (their first linear layer depends on it)


@dataclass(frozen=True)
class Entry:
    """One tensor of a network inside the flat float32 vector: ``flat[offset : offset + numel]``."""

    name: str
    shape: tuple[int, ...]
    offset: int
    kind: str  # "parameter" | "buffer"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Layout:
    """Ordered state-dict entries of a network and their place in the flat vector.

    Order is the state-dict order (per layer: weight, then bias, as the original's ``index_dict``).
    Floating-point buffers (BatchNorm running mean/var) follow the parameters of their layer and are
    part of the vector; integer buffers (``num_batches_tracked``) are not stored.
    """

    entries: tuple[Entry, ...]

    @classmethod
    def of(cls, model: Any) -> Layout:
        """The layout of a torch ``nn.Module``."""
        params = {name for name, _ in model.named_parameters()}
        entries, offset = [], 0
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            kind = "parameter" if name in params else "buffer"
            entries.append(Entry(name, tuple(tensor.shape), offset, kind))
            offset += tensor.numel()
        return cls(tuple(entries))

    @classmethod
    def stack(cls, shapes: list[tuple[str, tuple[int, ...], str]]) -> Layout:
        """The layout of ``(name, shape, kind)`` tensors placed one after another."""
        entries, offset = [], 0
        for name, shape, kind in shapes:
            entries.append(Entry(name, tuple(shape), offset, kind))
            offset += math.prod(shape)
        return cls(tuple(entries))

    @property
    def size(self) -> int:
        """Length D of the flat vector (parameters and float buffers)."""
        last = self.entries[-1]
        return last.offset + last.numel

    @property
    def num_parameters(self) -> int:
        return sum(e.numel for e in self.entries if e.kind == "parameter")

    def subset(self, names: Iterable[str]) -> Layout:
        """The layout of the entries named ``names`` only, in this layout's order, packed from offset 0."""
        keep, entries, offset = set(names), [], 0
        for e in self.entries:
            if e.name in keep:
                entries.append(Entry(e.name, e.shape, offset, e.kind))
                offset += e.numel
        return Layout(tuple(entries))

    def parameters(self) -> Layout:
        """The layout of the parameters (no buffers): where optimizer states sit in their flat vectors."""
        return self.subset(e.name for e in self.entries if e.kind == "parameter")

    def __getitem__(self, name: str) -> Entry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(f"no tensor {name!r} in layout; names: {', '.join(e.name for e in self.entries)}")

    def flatten(self, state: dict) -> Any:
        """State dict of torch tensors → flat float32 vector [D] (or [..., D] for stacked states)."""
        import torch

        missing = [e.name for e in self.entries if e.name not in state]
        if missing:
            raise KeyError(f"state dict lacks {missing}")
        lead = state[self.entries[0].name].shape[: -len(self.entries[0].shape) or None]
        return torch.cat([state[e.name].reshape(*lead, e.numel).float() for e in self.entries], dim=-1)

    def unflatten(self, flat: Any) -> dict:
        """Flat vector [..., D] (torch or numpy) → state dict of views shaped [..., *shape]."""
        if flat.shape[-1] != self.size:
            raise ValueError(f"flat vector has length {flat.shape[-1]}, layout expects {self.size}")
        lead = tuple(flat.shape[:-1])
        return {e.name: flat[..., e.offset : e.offset + e.numel].reshape(*lead, *e.shape) for e in self.entries}

    def load_into(self, model: Any, flat: Any) -> Any:
        """Copy a flat vector [D] into the torch ``model`` (which must have this layout)."""
        if Layout.of(model) != self:
            raise ValueError("model does not have this layout")
        model.load_state_dict(self.unflatten(flat), strict=False)
        return model

    def to_json(self) -> list[dict]:
        return [{"name": e.name, "shape": list(e.shape), "offset": e.offset, "kind": e.kind} for e in self.entries]

    @classmethod
    def from_json(cls, rows: list[dict]) -> Layout:
        return cls(tuple(Entry(r["name"], tuple(r["shape"]), int(r["offset"]), r["kind"]) for r in rows))


# ---------------------------------------------------------------------------------------------------------
# Each architecture's layout from its shape
# ---------------------------------------------------------------------------------------------------------


def cnn_layout(layers: tuple[LayerSpec, ...], input_size: int, in_channels: int, num_classes: int) -> Layout:
    """The layout of the ``ConvNet`` of a LayerSpec table for c×s×s inputs (weight then bias per layer)."""
    shapes, channels, size = [], in_channels, input_size
    for i, spec in enumerate(layers):
        out = num_classes if i == len(layers) - 1 else spec.out
        if spec.kind == "conv":
            shapes.append((f"{spec.name}.weight", (out, channels, spec.kernel, spec.kernel), "parameter"))
            size = size - spec.kernel + 1
            size = size // 2 if spec.pool else size
        else:
            shapes.append((f"{spec.name}.weight", (out, channels * size * size), "parameter"))
            size = 1
        shapes.append((f"{spec.name}.bias", (out,), "parameter"))
        channels = out
    return Layout.stack(shapes)


RESNET18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, stride of the first block) per stage


def _batch_norm(name: str, channels: int) -> list[tuple[str, tuple[int, ...], str]]:
    return [(f"{name}.weight", (channels,), "parameter"), (f"{name}.bias", (channels,), "parameter"),
            (f"{name}.running_mean", (channels,), "buffer"), (f"{name}.running_var", (channels,), "buffer")]


def resnet18_layout(in_channels: int, num_classes: int) -> Layout:
    """The layout of torchvision's ResNet-18 with the small-image stem (3×3 conv1, no max-pool), in its
    state-dict order: stem, four stages of two BasicBlocks (a 1×1 downsample where the shape changes), fc."""
    shapes = [("conv1.weight", (64, in_channels, 3, 3), "parameter"), *_batch_norm("bn1", 64)]
    channels = 64
    for s, (out, stride) in enumerate(RESNET18_STAGES, 1):
        for b in range(2):
            block = f"layer{s}.{b}"
            first = channels if b == 0 else out
            shapes += [(f"{block}.conv1.weight", (out, first, 3, 3), "parameter"), *_batch_norm(f"{block}.bn1", out),
                       (f"{block}.conv2.weight", (out, out, 3, 3), "parameter"), *_batch_norm(f"{block}.bn2", out)]
            if b == 0 and (stride != 1 or channels != out):
                shapes += [(f"{block}.downsample.0.weight", (out, channels, 1, 1), "parameter"),
                           *_batch_norm(f"{block}.downsample.1", out)]
        channels = out
    return Layout.stack([*shapes, ("fc.weight", (num_classes, 512), "parameter"),
                         ("fc.bias", (num_classes,), "parameter")])


# Architecture name → (in_channels, num_classes) → Layout; the keys are the architectures of
# ``modelzoos.architectures.ARCHITECTURES`` (checked there at import).
LAYOUTS: dict[str, Callable[[int, int], Layout]] = {
    "cnn": partial(cnn_layout, CNN_S, INPUT_SIZE["cnn"]),
    "cnn_m": partial(cnn_layout, CNN_M, INPUT_SIZE["cnn_m"]),
    "resnet18": resnet18_layout,
}
