"""The three zoo architectures, their initialisation, and the flat weight layout.

Registry: ``ARCHITECTURES`` maps an architecture name (``cnn``, ``cnn_m``, ``resnet18``) to an
``Architecture`` entry: its builder ``(in_channels, num_classes, activation, dropout) -> nn.Module`` and what
the rest of the package can do with it (default training engine, LayerSpec table for batched training and
twins, residual links, neuron tokens); ``build_model`` is the one front door.

Parameter names are stable (``conv1.weight``, ``fc2.bias``, torchvision names for ResNet-18) and never
depend on dropout: the original public CNN class shifted module indices when dropout > 0 (protocol §12.8).

Protocol quirks kept on purpose (protocol §2, §12): pooling comes *before* the activation; every CNN
has 10 logits; the init scheme overwrites every Conv2d/Linear weight and every bias becomes 0.01, also
for ``uniform`` (U[0, 1)).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from modelzoos import randomness

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "gelu": nn.GELU,  # exact erf form, as in the original
}

INITS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "uniform": nn.init.uniform_,  # U[0, 1)
    "normal": nn.init.normal_,  # N(0, 1)
    "kaiming_uniform": nn.init.kaiming_uniform_,  # a=0, fan_in, leaky_relu gain
    "kaiming_normal": nn.init.kaiming_normal_,
}

BIAS_INIT = 0.01


def _choice(kind: str, value: str, table: dict) -> None:
    if value not in table:
        raise ValueError(f"unknown {kind} {value!r}; valid: {', '.join(sorted(table))}")


# ---------------------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """One parameterised layer of a zoo CNN and what follows it.

    Stage order is the original's: layer → [max-pool 2×2] → [activation] → [dropout].
    """

    name: str
    kind: str  # "conv" (stride 1, no padding, with bias) | "linear" (flattens channel-major first)
    out: int  # output channels / units; the last layer's ``out`` is replaced by num_classes
    kernel: int = 0
    pool: bool = False
    act: bool = True
    dropout: bool = True


CNN_S = (
    LayerSpec("conv1", "conv", 8, kernel=5, pool=True),
    LayerSpec("conv2", "conv", 6, kernel=5, pool=True),
    LayerSpec("conv3", "conv", 4, kernel=2, dropout=False),
    LayerSpec("fc1", "linear", 20),
    LayerSpec("fc2", "linear", 10, act=False, dropout=False),
)
CNN_M = (
    LayerSpec("conv1", "conv", 16, kernel=3, pool=True),
    LayerSpec("conv2", "conv", 32, kernel=3, pool=True),
    LayerSpec("conv3", "conv", 15, kernel=3, pool=True),
    LayerSpec("fc1", "linear", 20),
    LayerSpec("fc2", "linear", 10, act=False, dropout=False),
)


class KeyedDropout(nn.Module):
    """Inverted dropout whose mask is a pure function of (model seed, step, element): randomness.py.

    The trainer sets ``key = (seed, step)`` before each training forward (``set_dropout_key``).
    """

    def __init__(self, p: float, stream: int) -> None:
        super().__init__()
        self.p, self.stream = p, stream
        self.key: tuple[int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.key is None:
            raise RuntimeError("KeyedDropout in training mode needs set_dropout_key(model, seed, step) first")
        seed, step = self.key
        index = torch.arange(x.numel(), device=x.device).reshape(x.shape)
        keep = randomness.uniform(seed, self.stream, step, index) >= self.p
        return x * keep / (1 - self.p)


def set_dropout_key(model: nn.Module, seed: int, step: int) -> None:
    """Key the dropout masks of the next training forward of ``model`` to (seed, global step)."""
    for module in model.modules():
        if isinstance(module, KeyedDropout):
            module.key = (seed, step)


class ConvNet(nn.Module):
    """A zoo CNN built from a ``LayerSpec`` table (``CNN_S``: CNN-s, ``CNN_M``: CNN-m).

    Parameters are attributes named after the layers (``conv1.weight``, …), independent of dropout.
    """

    def __init__(self, layers: tuple[LayerSpec, ...], in_channels: int, input_size: int, num_classes: int,
                 activation: str, dropout: float) -> None:
        super().__init__()
        self.specs = layers
        self.act = ACTIVATIONS[activation]()
        self.pool = nn.MaxPool2d(2, 2)
        channels, size = in_channels, input_size
        for i, spec in enumerate(layers):
            out = num_classes if i == len(layers) - 1 else spec.out
            if spec.kind == "conv":
                self.add_module(spec.name, nn.Conv2d(channels, out, spec.kernel))
                size = size - spec.kernel + 1
                size = size // 2 if spec.pool else size
            else:
                self.add_module(spec.name, nn.Linear(channels * size * size, out))
                size = 1
            channels = out
            if spec.dropout:
                self.add_module(f"{spec.name}_dropout", KeyedDropout(dropout, randomness.DROPOUT + i))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for spec in self.specs:
            layer = getattr(self, spec.name)
            x = layer(x.flatten(1) if spec.kind == "linear" else x)
            x = self.pool(x) if spec.pool else x
            x = self.act(x) if spec.act else x
            x = getattr(self, f"{spec.name}_dropout")(x) if spec.dropout else x
        return x


def small_cnn(in_channels: int = 1, num_classes: int = 10, activation: str = "tanh",
              dropout: float = 0.0) -> ConvNet:
    """CNN-s for c×28×28 inputs: 2,464 parameters (c=1) or 2,864 (c=3)."""
    return ConvNet(CNN_S, in_channels, 28, num_classes, activation, dropout)


def medium_cnn(in_channels: int = 3, num_classes: int = 10, activation: str = "tanh",
               dropout: float = 0.0) -> ConvNet:
    """CNN-m for 3×32×32 inputs: 10,853 parameters."""
    return ConvNet(CNN_M, in_channels, 32, num_classes, activation, dropout)


def resnet18(in_channels: int = 3, num_classes: int = 10, activation: str = "relu",
             dropout: float = 0.0) -> nn.Module:
    """torchvision ResNet-18 with the small-image stem: 3×3 stride-1 conv1, no max-pool.

    11,173,962 / 11,220,132 / 11,271,432 parameters for 10 / 100 / 200 classes. Only ReLU and no
    dropout, as in every published ResNet zoo.
    """
    if activation != "relu" or dropout != 0:
        raise ValueError(f"resnet18 supports activation='relu' and dropout=0 only, got {activation!r}, {dropout}")
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


@dataclass(frozen=True)
class Architecture:
    """One registry entry: how to build the network and what the package can do with it."""

    build: Callable[..., nn.Module]  # (in_channels, num_classes, activation, dropout) -> module
    engine: str  # default training engine: "population" (many models batched) | "reference" (one at a time)
    layers: tuple[LayerSpec, ...] | None = None  # a ConvNet's table: the population engine and the twins batch it
    residual: bool = False  # residual links tie permutation groups (transforms.PermutationSpec)
    neuron_tokens: bool = True  # a whole model fits one sequence of per-neuron tokens (baselines.hyperrep)


ARCHITECTURES: dict[str, Architecture] = {
    "cnn": Architecture(small_cnn, "population", CNN_S),
    "cnn_m": Architecture(medium_cnn, "population", CNN_M),
    # compute-bound steps at batch 128-256: one model at a time (BENCHMARKS.md, ResNet-18)
    "resnet18": Architecture(resnet18, "reference", residual=True, neuron_tokens=False),
}


def get_architecture(name: str) -> Architecture:
    """The registry entry of ``name``; ValueError listing the valid names otherwise."""
    _choice("architecture", name, ARCHITECTURES)
    return ARCHITECTURES[name]


def init_weights(model: nn.Module, init: str) -> nn.Module:
    """Apply ``init`` to the weight of every Conv2d and Linear, then set every bias to 0.01 (in place)."""
    _choice("init", init, INITS)
    fn = INITS[init]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                fn(module.weight)
                if module.bias is not None:
                    module.bias.fill_(BIAS_INIT)
    return model


def build_model(architecture: str, *, in_channels: int, num_classes: int = 10, activation: str = "tanh",
                dropout: float = 0.0, init: str | None = None, seed: int | None = None) -> nn.Module:
    """Build a zoo network; with ``seed`` the construction is seeded exactly as in the protocol.

    Protocol §4.1: ``torch.manual_seed(seed)`` is called, then the module is constructed (consuming the
    RNG with torch's default init) and the init scheme applied. Models with equal (seed, init,
    architecture, channels) are therefore bit-identical, whatever their activation, dropout or optimizer.
    The global torch RNG is restored afterwards so that building a model has no side effect.
    """
    entry = get_architecture(architecture)
    _choice("activation", activation, ACTIVATIONS)
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = entry.build(in_channels, num_classes, activation, dropout)
        if init is not None:
            init_weights(model, init)
    return model


# ---------------------------------------------------------------------------------------------------------
# Flat layout
# ---------------------------------------------------------------------------------------------------------


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

    Order is the state-dict order (per layer: weight, then bias; protocol §2.4's ``index_dict``).
    Floating-point buffers (BatchNorm running mean/var) follow the parameters of their layer and are
    part of the vector; integer buffers (``num_batches_tracked``) are not stored.
    """

    entries: tuple[Entry, ...]

    @classmethod
    def of(cls, model: nn.Module) -> Layout:
        params = {name for name, _ in model.named_parameters()}
        entries, offset = [], 0
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            kind = "parameter" if name in params else "buffer"
            entries.append(Entry(name, tuple(tensor.shape), offset, kind))
            offset += tensor.numel()
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

    def flatten(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """State dict → flat float32 vector [D] (or [..., D] for stacked states with leading dims)."""
        missing = [e.name for e in self.entries if e.name not in state]
        if missing:
            raise KeyError(f"state dict lacks {missing}")
        lead = state[self.entries[0].name].shape[: -len(self.entries[0].shape) or None]
        return torch.cat([state[e.name].reshape(*lead, e.numel).float() for e in self.entries], dim=-1)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat vector [..., D] → state dict of views shaped [..., *shape]."""
        if flat.shape[-1] != self.size:
            raise ValueError(f"flat vector has length {flat.shape[-1]}, layout expects {self.size}")
        lead = flat.shape[:-1]
        return {e.name: flat[..., e.offset : e.offset + e.numel].reshape(*lead, *e.shape) for e in self.entries}

    def load_into(self, model: nn.Module, flat: torch.Tensor) -> nn.Module:
        """Copy a flat vector [D] into ``model`` (which must have this layout)."""
        if Layout.of(model) != self:
            raise ValueError("model does not have this layout")
        model.load_state_dict(self.unflatten(flat), strict=False)
        return model

    def to_json(self) -> list[dict]:
        return [{"name": e.name, "shape": list(e.shape), "offset": e.offset, "kind": e.kind} for e in self.entries]

    @classmethod
    def from_json(cls, rows: list[dict]) -> Layout:
        return cls(tuple(Entry(r["name"], tuple(r["shape"]), int(r["offset"]), r["kind"]) for r in rows))
