"""The three zoo architectures as torch networks, and their initialisation.

Registry: ``ARCHITECTURES`` maps an architecture name (``cnn``, ``cnn_m``, ``resnet18``) to an
``Architecture`` entry: its builder ``(in_channels, num_classes, activation, dropout) -> nn.Module`` and what
the rest of the package can do with it (default training engine, LayerSpec table for batched training and
twins, residual links, neuron tokens); ``build_model`` is the one front door. The shapes (LayerSpec tables)
and the flat weight layout are torch-free data in ``modelzoos.layout`` (re-exported here).

Protocol quirks kept on purpose (docs/protocol.md, "Followed as published"): pooling comes *before* the
activation; every CNN has 10 logits; the init scheme overwrites every Conv2d/Linear weight and every bias
becomes 0.01, also for ``uniform`` (U[0, 1)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from modelzoos import randomness
from modelzoos.catalogue import GRID_NAMES, check_registry
from modelzoos.layout import CNN_M, CNN_S, INPUT_SIZE, LAYOUTS, Entry, LayerSpec, Layout

__all__ = ["ACTIVATIONS", "ARCHITECTURES", "BIAS_INIT", "INITS", "Architecture", "ConvNet", "Entry", "KeyedDropout",
           "LayerSpec", "Layout", "build_model", "get_architecture", "init_weights", "set_dropout_key"]

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
    return ConvNet(CNN_S, in_channels, INPUT_SIZE["cnn"], num_classes, activation, dropout)


def medium_cnn(in_channels: int = 3, num_classes: int = 10, activation: str = "tanh",
               dropout: float = 0.0) -> ConvNet:
    """CNN-m for 3×32×32 inputs: 10,853 parameters."""
    return ConvNet(CNN_M, in_channels, INPUT_SIZE["cnn_m"], num_classes, activation, dropout)


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
check_registry("architectures.ARCHITECTURES", ARCHITECTURES, tuple(LAYOUTS))
check_registry("architectures.INITS", INITS, GRID_NAMES["init"])
check_registry("architectures.ACTIVATIONS", ACTIVATIONS, GRID_NAMES["activation"])


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
