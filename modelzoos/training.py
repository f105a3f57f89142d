"""Reference training: one model at a time in plain PyTorch, faithful to the zoo protocol (§4, §6).

Training is a generator of ``EpochResult`` (epoch 0 = the untrained model, then one per epoch); it
knows nothing about files. ``export.generate`` writes each result and the resumable ``state``.

Per model: the seed fixes the initial weights (``build_model``), and through ``randomness.model_key``
(the seed and the original's RNG-consumption class of the init scheme and dropout) the data order of every
epoch, the dropout masks and the augmentations. Batch size as in the spec, last partial batch kept. Adam
uses coupled L2 (``weight_decay``), SGD momentum 0.9; OneCycle is stepped after every batch. Train metrics
are the sample-weighted running average of the train-mode forward passes of the epoch (before each
update); val/test metrics are clean eval-mode passes after the epoch. At epoch 0 all three splits are
evaluated in eval mode, the train split with the train augmentation, as the original ResNet trainable
evaluated its augmented train loader (the original CNN trainable wrote −999 placeholders instead).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modelzoos import randomness
from modelzoos.architectures import build_model, get_architecture, set_dropout_key
from modelzoos.catalogue import METRICS, ModelConfig, Zoo
from modelzoos.data import ImageData, Split
from modelzoos.layout import Layout
from modelzoos.optimizers import OPTIMIZERS

EVAL_BATCH = 1000  # images per eval forward; only memory depends on it
# numeric switches (docs/protocol.md, "Numerics"): name → environment variable
NUMERICS_ENV = {"tf32": "MODELZOOS_TF32", "channels_last": "MODELZOOS_CHANNELS_LAST", "compile": "MODELZOOS_COMPILE",
                "kernels": "MODELZOOS_KERNELS"}
# the values each variable accepts → the switch's value
_FLAG = {"0": False, "1": True}
NUMERICS_VALUES: dict[str, dict[str, bool | str]] = {
    "tf32": _FLAG, "channels_last": _FLAG, "compile": _FLAG,
    "kernels": {"torch": "torch", "fused": "fused"},  # the population engine's training step (modelzoos.kernels)
}
# defaults by device type: the faster layout of each, measured (BENCHMARKS.md: channels-last is faster on our
# CPU, slower for grouped convolutions on an H100 and no faster for ResNet-18 there); the fused kernels are not
# measured on a GPU yet
NUMERICS_DEFAULTS = {"cpu": {"tf32": False, "channels_last": True, "compile": False, "kernels": "torch"},
                     "cuda": {"tf32": False, "channels_last": False, "compile": False, "kernels": "torch"}}
# zoo.json files written before a switch was recorded ran with these values
LEGACY_NUMERICS = {"tf32": False, "channels_last": False, "compile": False, "kernels": "torch"}


@dataclass
class EpochResult:
    """What one epoch of a chunk of M models produced."""

    epoch: int
    weights: torch.Tensor  # float32 [M, D] on CPU, in the zoo's Layout
    metrics: dict[str, list[float]]  # METRICS → M values (NaN where a split is absent)
    state: dict[str, torch.Tensor]  # everything needed to continue after this epoch (CPU tensors)
    # the optimizer state after the epoch: "<slot>" → float32 [M, P] in Layout.parameters() (NaN rows: that model's
    # optimizer has no such slot), "step" → int64 [M] optimizer steps taken; None: the trainer keeps none
    optimizer: dict[str, torch.Tensor] | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        """What the epoch's file holds (export): the weights."""
        return {"weights": self.weights}


def check_device(device: str) -> None:
    """ValueError, with the fix, unless torch can compute on ``device`` here (checked before anything is
    written: a run never claims a directory for a device it cannot use)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device {device!r} is not a torch device ({err}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a build without CUDA"
        raise ValueError(f"--device {device}: no CUDA GPU is usable on this machine (torch {torch.__version__}, "
                         f"{build}); use --device cpu, or run where a GPU is visible")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    try:
        torch.zeros(1, device=dev)
    except (RuntimeError, AssertionError) as err:
        raise ValueError(f"--device {device} cannot be used here ({err}); use --device cpu") from None


def numerics(device: str | torch.device = "cpu") -> dict[str, bool | str]:
    """The numeric switches for training on ``device`` (docs/protocol.md, "Numerics"): ``NUMERICS_ENV``
    variables where set (to one of ``NUMERICS_VALUES``), else ``NUMERICS_DEFAULTS`` of the device type.

    ``tf32`` (default off) sets torch's TF32 switches, also for cuDNN convolutions, whose torch default is
    on. ``channels_last`` (default on CPU, off on CUDA) is the activation layout of the population engine
    and of the architectures whose default engine is this reference engine (ResNet-18: ``fast_path``).
    ``compile`` (default off) runs those through ``torch.compile`` (fused kernels: another rounding).
    ``kernels`` (default ``torch``) picks the population engine's training step: PyTorch operations, or
    ``fused`` Triton kernels (``modelzoos.kernels``). On CUDA, cuDNN also times its algorithms per shape
    (``cudnn.benchmark``: faster grouped convolutions, BENCHMARKS.md; GPU runs are not bitwise reproducible
    anyway). zoo.json records the switches and a run does not resume under other ones.
    """
    kind = torch.device(device).type
    flags = {}
    for name, var in NUMERICS_ENV.items():
        value, accepted = os.environ.get(var), NUMERICS_VALUES[name]
        if value is None:
            flags[name] = NUMERICS_DEFAULTS.get(kind, NUMERICS_DEFAULTS["cpu"])[name]
        elif value in accepted:
            flags[name] = accepted[value]
        else:
            raise ValueError(f"environment variable {var}={value!r}: use {' or '.join(accepted)} "
                             "(docs/protocol.md, Numerics)")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = flags["tf32"]
    if kind == "cuda":
        torch.backends.cudnn.benchmark = True
    return flags


def numerics_setting(name: str, value: bool | str) -> str:
    """The setting of switch ``name``'s environment variable (``NUMERICS_ENV``) that gives it ``value``."""
    return next(setting for setting, v in NUMERICS_VALUES[name].items() if v == value)


# ---------------------------------------------------------------------------------------------------------
# Data: batches, augmentation, evaluation
# ---------------------------------------------------------------------------------------------------------


TRAIN_STREAMS = (randomness.CROP_X, randomness.CROP_Y, randomness.FLIP)
VAL_STREAMS = (randomness.VAL_CROP_X, randomness.VAL_CROP_Y, randomness.VAL_FLIP)


def augment(images: torch.Tensor, kind: str, pad_value: torch.Tensor, key: int, epoch: int,
            sample_ids: torch.Tensor, streams: tuple[int, int, int] = TRAIN_STREAMS) -> torch.Tensor:
    """Random augmentation of a batch [B, C, H, W] of normalised images, keyed by (model key, epoch, sample id).

    ``crop_flip``: RandomCrop(H, padding 4) filled with black, then horizontal flip with p = 0.5 (CIFAR).
    ``flip_rotate``: horizontal flip with p = 0.5, then RandomRotation(±20°), nearest, black fill
    (Tiny-ImageNet). ``pad_value`` [C] is black after normalisation.
    """
    if kind == "none":
        return images
    b, c, h, w = images.shape
    sx, sy, sf = streams
    fill = pad_value.to(images.device, images.dtype).view(1, c, 1, 1)
    flip = randomness.uniform(key, sf, epoch, sample_ids) < 0.5
    if kind == "crop_flip":
        padded = fill.expand(b, c, h + 8, w + 8).clone()
        padded[:, :, 4:-4, 4:-4] = images
        ox = (randomness.uniform(key, sx, epoch, sample_ids) * 9).long()
        oy = (randomness.uniform(key, sy, epoch, sample_ids) * 9).long()
        rows = (oy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
        out = padded[torch.arange(b, device=images.device)[:, None, None, None],
                     torch.arange(c, device=images.device)[None, :, None, None], rows, cols]
        return torch.where(flip.view(b, 1, 1, 1), out.flip(-1), out)
    if kind == "flip_rotate":
        x = torch.where(flip.view(b, 1, 1, 1), images.flip(-1), images)
        angle = (randomness.uniform(key, randomness.ROTATE, epoch, sample_ids) * 40 - 20) * math.pi / 180
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
        return F.grid_sample(x - fill, grid, mode="nearest", align_corners=False) + fill
    raise ValueError(f"unknown augmentation {kind!r}; valid: none, crop_flip, flip_rotate")


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, device: torch.device,
             aug: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
             fmt: torch.memory_format = torch.contiguous_format) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in [0, 1]) of ``model`` in eval mode over a whole split.

    ``aug(images, sample_ids)`` augments each batch first (sample id = position in the split); ``fmt`` is
    the memory format of the model's inputs.
    """
    model.eval()
    loss_sum, correct, n = 0.0, 0, split.labels.numel()
    for start in range(0, n, EVAL_BATCH):
        x = split.images[start : start + EVAL_BATCH].to(device)
        y = split.labels[start : start + EVAL_BATCH].to(device)
        if aug is not None:
            x = aug(x, torch.arange(start, start + len(y), device=device))
        logits = model(x.contiguous(memory_format=fmt))
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    return loss_sum / n, correct / n


# ---------------------------------------------------------------------------------------------------------
# Optimiser and schedule
# ---------------------------------------------------------------------------------------------------------


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)


def make_optimizer(model: nn.Module, config: ModelConfig, n_train: int):
    """(optimizer, scheduler or None) of the protocol for one model."""
    opt = OPTIMIZERS[config.optimizer].torch(model.parameters(), config.lr, config.weight_decay)
    if config.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch(n_train, config.batch_size))
        return opt, sched
    return opt, None


def _pack_state(model: nn.Module, opt: torch.optim.Optimizer, step: int) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for p, s in opt.state.items():
        for key, value in s.items():
            state[f"opt.{names[id(p)]}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
    state["step"] = torch.tensor(step, dtype=torch.int64)
    return state


def _optimizer_tensors(model: nn.Module, opt: torch.optim.Optimizer, optimizer: str, step: int,
                       params: Layout) -> dict[str, torch.Tensor]:
    """``EpochResult.optimizer`` of one model: each slot flattened in ``params`` [1, P] (zeros before the first
    step, where torch has no state yet: the batched optimizers start from zeros, to the same effect)."""
    out = {}
    for slot in OPTIMIZERS[optimizer].slots:
        out[slot] = params.flatten({n: opt.state.get(p, {}).get(slot, torch.zeros_like(p)).detach().cpu()
                                    for n, p in model.named_parameters()})[None]
    return out | {"step": torch.tensor([step], dtype=torch.int64)}


def _unpack_state(state: dict[str, torch.Tensor], model: nn.Module, opt: torch.optim.Optimizer,
                  sched, device: torch.device) -> int:
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    params = dict(model.named_parameters())
    for key, value in state.items():
        if key.startswith("opt."):
            name, field = key[4:].rsplit(".", 1)
            opt.state[params[name]][field] = value.to(device) if field != "step" else value.clone()
    step = int(state["step"])
    if sched is not None:
        for _ in range(step):
            sched.step()
    return step


# ---------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------

Resume = tuple[int, dict[str, torch.Tensor]]  # (last epoch written, the EpochResult.state yielded after it)


def run_epochs(record: Callable[[int, Any], EpochResult], train_epoch: Callable[[int], Any],
               restore: Callable[[dict[str, torch.Tensor]], None], resume: Resume | None,
               stop: int) -> Iterator[EpochResult]:
    """The epoch loop every trainer shares (reference, population, twins).

    Without ``resume``: ``record(0, None)`` (the untrained models), then ``record(e, train_epoch(e))`` for
    e = 1 … ``stop``. With ``resume = (epoch, state)``: ``restore(state)``, then the epochs after ``epoch``.
    ``train_epoch`` returns the epoch's running train metrics, which ``record`` stores.
    """
    if resume is None:
        first = 1
        yield record(0, None)
    else:
        first = resume[0] + 1
        restore(resume[1])
    for epoch in range(first, stop + 1):
        yield record(epoch, train_epoch(epoch))



def fast_path(architecture: str) -> bool:
    """Whether the reference engine is the architecture's default (fast) engine: then it follows the layout
    and compile switches. The small CNNs' fast path is the population engine; the reference engine runs them
    in PyTorch's default layout, eagerly: the one-by-one baseline the population engine is checked against."""
    return get_architecture(architecture).engine == "reference"


def train_reference(zoo: Zoo, config: ModelConfig, data: ImageData, device: str | torch.device = "cpu",
                    resume: Resume | None = None, stop: int | None = None) -> Iterator[EpochResult]:
    """Train one model; yield epoch 0 (untrained) and every epoch up to ``stop`` (default ``config.epochs``).

    ``stop < config.epochs`` gives the first epochs of the full protocol run (schedules unchanged).
    ``resume = (epoch, state)`` continues from the state yielded after ``epoch``; the results are then
    bitwise those of an uninterrupted run on the same device.
    """
    device = torch.device(device)
    flags = numerics(device)
    fast = fast_path(zoo.architecture)
    fmt = torch.channels_last if fast and flags["channels_last"] else torch.contiguous_format
    layout = zoo.layout
    model = build_model(zoo.architecture, in_channels=zoo.in_channels, num_classes=zoo.num_classes,
                        activation=config.activation, dropout=config.dropout, init=config.init,
                        seed=config.seed).to(device, memory_format=fmt)
    if Layout.of(model) != layout:
        raise RuntimeError("model layout differs from the zoo layout")
    net = torch.compile(model) if fast and flags["compile"] else model  # same parameters; model names them
    train = data.train
    n = train.labels.numel()
    opt, sched = make_optimizer(model, config, n)
    recipe = data.recipe
    pad = data.pad_value
    images, labels = train.images.to(device), train.labels.to(device)
    step = 0

    def key(epoch: int) -> int:
        return randomness.model_key(config.seed, config.init, config.dropout, epoch)

    def augmenter(epoch: int, streams: tuple[int, int, int]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda x, ids: augment(x, recipe.augment, pad, key(epoch), epoch, ids, streams)

    def record(epoch: int, train_metrics: tuple[float, float] | None) -> EpochResult:
        val_aug = augmenter(epoch, VAL_STREAMS) if recipe.augment_val else None
        tl, ta = train_metrics if train_metrics is not None else evaluate(net, train, device,
                                                                          augmenter(epoch, TRAIN_STREAMS), fmt)
        vl, va = evaluate(net, data.val, device, val_aug, fmt) if data.val is not None else (math.nan, math.nan)
        sl, sa = evaluate(net, data.test, device, fmt=fmt)
        values = dict(zip(METRICS, (tl, ta, vl, va, sl, sa), strict=True))
        flat = layout.flatten({k: v.detach().cpu() for k, v in model.state_dict().items()})
        return EpochResult(epoch, flat[None], {k: [v] for k, v in values.items()}, _pack_state(model, opt, step),
                           _optimizer_tensors(model, opt, config.optimizer, step, layout.parameters()))

    def restore(state: dict[str, torch.Tensor]) -> None:
        nonlocal step
        step = _unpack_state(state, model, opt, sched, device)

    def train_epoch(epoch: int) -> tuple[float, float]:
        nonlocal step
        net.train()
        k = key(epoch)
        order = randomness.permutation(k, randomness.DATA_ORDER, epoch, n, device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            x = augment(images[idx], recipe.augment, pad, k, epoch, idx).contiguous(memory_format=fmt)
            y = labels[idx]
            set_dropout_key(model, k, step)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            loss_sum += loss.detach().double() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
        return loss_sum.item() / n, correct.item() / n

    return run_epochs(record, train_epoch, restore, resume, config.epochs if stop is None else stop)


def train_reference_chunk(zoo: Zoo, configs: list[ModelConfig], data: ImageData, device: str | torch.device,
                          resume: Resume | None = None, stop: int | None = None) -> Iterator[EpochResult]:
    """The reference engine as a chunk trainer (one model per chunk)."""
    if len(configs) != 1:
        raise ValueError(f"the reference engine trains one model per chunk, got {len(configs)}")
    return train_reference(zoo, configs[0], data, device, resume, stop)

