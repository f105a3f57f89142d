"""Sparsified model zoo twins: every final model of a finished CNN zoo, sparsified for 25 epochs
(docs/protocol.md, "Sparsified twins").

``sparsify(source, out, method)`` reads a zoo directory written by ``modelzoos generate``, loads every
model's final state and trains it on for ``TWIN_EPOCHS`` epochs with one of two methods, many models at
once along a model axis exactly like the population engine (grouped convolutions, batched matmuls,
per-model Adam/SGD with the source model's lr and weight decay, counter-based randomness keyed by the
model's seed). The result is a zoo directory in the same format (docs/format.md).

Methods
-------
``vd``  Variational dropout with ARD layers (Molchanov et al. 2017, arXiv 1701.05369), as the original
        twins (MZD ``def_net_distillation.py``, adapted from ``pytorch_ard``): every conv and linear weight
        and every conv bias gets a ``log σ²`` initialised to −10; log α = log σ² − 2·log(|w| + 1e-15),
        clipped to [−8, 8] (conv) / [−10, 10] (linear). Training forward: local reparameterisation
        (pre-activation mean plus √(1e-15 + variance)·ε, conv biases noised by their own α, linear
        biases deterministic). Loss: cross-entropy + kl_weight · Σ −KL, the approximation with
        k1, k2, k3 = 0.63576, 1.8732, 1.48695 over conv weights, conv biases and linear weights;
        kl_weight(e) = min(1, 0.01·e/25) for the e-th training epoch counted from 0 (0 … 0.0096).
        Eval: weights with log α ≥ 3 are zeroed, conv biases by their own α. The optimizer runs over
        every parameter incl. log σ² (coupled L2 on log σ² too, as the original's optimizer did).
``mp``  Global magnitude pruning with gradual pruning (Zhu & Gupta 2017, arXiv 1710.01878). TWINS
        (arXiv 2304.13718) used magnitude pruning but published no settings; ours: per model, over all
        conv and linear weights together (biases never pruned), target sparsity 0.8 (the VD twins'
        reported level) reached on the cubic schedule s(e) = 0.8·(1 − (1 − e/20)³) at the start of
        training epochs e = 1 … 20, then 5 fine-tuning epochs at 0.8. Pruning zeroes the smallest |w|;
        pruned weights stay exactly zero (re-masked after every optimizer step), so masks only grow.
        Loss: cross-entropy; optimizer and hyperparameters as the source model's.

Both: a fresh optimizer (the original loaded weights only), the source's batch size and dropout
probability, data order ``randomness.permutation`` on a stream of its own (``DATA_ORDER_STREAM``),
dropout masks and VD noise (Box–Muller on ``randomness.uniform``) on streams of their own, so a twin
never replays its source's draws. Numerics as the population engine (``training.numerics``: its eval
forward is the twins' eval; the twins' train forward keeps PyTorch's default layout).

Records (epochs 0 … 25, ``metadata.parquet`` with the extra column ``sparsity``)
---------------------------------------------------------------------------------
Epoch 0 is the loaded dense model, evaluated exactly as the population engine evaluates it, so its
test accuracy equals the source's last-epoch one; its sparsity is 0 (deviation: the original evaluated
the ARD model at iteration 0, which already drops the weights with |w| < e^−6.5 ≈ 0.0015 through the
log α ≥ 3 rule). Epoch e ≥ 1: ``train_*`` is the running mean of the epoch's train-mode forwards (VD:
noisy, so train accuracy sits below test accuracy and ggap turns negative, as in the original),
``val_*``/``test_*`` a clean eval pass of the sparse model. Losses are cross-entropy only (the original
logged the ELBO, cross-entropy + kl_weight·KL). ``sparsity`` = (zeroed weights) / (conv + linear
weights), biases excluded from both counts, as the original's ``sparsity_ratio``.

Files: ``weights`` float32 [M, D] holds the SPARSE state in the zoo's layout (masked weights and
masked conv biases exactly 0). VD files also hold ``log_sigma2`` float32 [M, D'] for the conv weights,
conv biases and linear weights, in the layout ``twins.log_sigma2_layout`` of zoo.json; log α recomputed
from the stored (w, log σ²) is ≥ 3 exactly where w = 0 (from epoch 1 on). zoo.json's ``run.zoo`` is the
source spec renamed ``<source>_sparse_<method>`` with ``epochs = 25``; its ``twins`` section records the
method, its settings and the source run. Resumable like ``generate`` (per-chunk state files).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from modelzoos import randomness
from modelzoos.architectures import get_architecture
from modelzoos.catalogue import TWIN_EPOCHS, TWIN_METHODS, ModelConfig, Zoo, check_registry, twin_name
from modelzoos.data import ImageData, load_image_data
from modelzoos.export import METADATA_SCHEMA, Run, ZooDir, ZooFileError, describe, produce
from modelzoos.layout import Layout
from modelzoos.population import (
    Group,
    GroupSteps,
    PopulationCNN,
    dropout,
    make_groups,
    pack_groups,
    record_metrics,
    unpack_groups,
)
from modelzoos.training import METRICS, EpochResult, Resume, check_device, numerics, run_epochs

# Variational dropout (docs/protocol.md, "Sparsified twins"; Molchanov et al. 2017)
LOG_SIGMA2_INIT = -10.0
LOG_ALPHA_CLIP = {"conv": (-8.0, 8.0), "linear": (-10.0, 10.0)}
LOG_ALPHA_THRESHOLD = 3.0  # eval: weights with log α ≥ 3 are zeroed
K1, K2, K3 = 0.63576, 1.8732, 1.48695  # Molchanov's KL approximation
KL_RAMP = 0.01  # kl_weight = min(1, KL_RAMP · e / TWIN_EPOCHS), e = 0-based training epoch
EPS = 1e-15  # inside log|w| and the variance's square root, as the original

# Magnitude pruning (our documented choice; TWINS published none)
MP_TARGET = 0.8  # final fraction of conv + linear weights pruned
MP_RAMP_EPOCHS = 20  # cubic ramp over training epochs 1..20, then fine-tuning at MP_TARGET


@dataclass(frozen=True)
class TwinMethod:
    """One sparsification method: what the twins' zoo.json and dataset card say about it."""

    label: str  # the card's sentence about the method: card.TWIN_TEXT
    settings: dict  # recorded in zoo.json's ``twins`` section
    log_sigma2: bool  # variational: per-weight log σ² parameters (and the KL penalty), stored with every state
    sparsity: Callable[[int], float] | None  # pruning: the fraction of weights pruned at the start of epoch e


METHODS: dict[str, TwinMethod] = {
    "vd": TwinMethod(
        "variational dropout",
        {"log_sigma2_init": LOG_SIGMA2_INIT, "log_alpha_clip": LOG_ALPHA_CLIP,
         "log_alpha_threshold": LOG_ALPHA_THRESHOLD, "kl_constants": [K1, K2, K3],
         "kl_weight": f"min(1, {KL_RAMP}*e/{TWIN_EPOCHS}), e = 0-based training epoch", "epochs": TWIN_EPOCHS},
        log_sigma2=True, sparsity=None),
    "mp": TwinMethod(
        "magnitude pruning",
        {"scope": "global per model over conv and linear weights, biases never pruned",
         "target_sparsity": MP_TARGET, "ramp_epochs": MP_RAMP_EPOCHS,
         "schedule": f"s(e) = {MP_TARGET}*(1-(1-min(e,{MP_RAMP_EPOCHS})/{MP_RAMP_EPOCHS})**3), "
                     "applied at the start of training epoch e",
         "epochs": TWIN_EPOCHS},
        log_sigma2=False, sparsity=lambda epoch: mp_sparsity(epoch)),
}
check_registry("twins.METHODS", METHODS, TWIN_METHODS)  # the catalogue names twin zoos after these methods
# The original twin experiment directories (docs/protocol.md, "Sparsified twins"); other twins have none.
SOURCES = {("mnist_cnn_seed", "vd"): "cnn_small_mnist_ard", ("svhn_cnn_seed", "vd"): "cnn_small_svhn_ard"}

# randomness streams of the twins, disjoint from those of zoo training (1..8, 16 + layer)
DATA_ORDER_STREAM = 64
DROPOUT_STREAM = 80  # + layer index
NOISE_STREAM = 96  # + 2·layer index; + 1 for the second uniform of Box–Muller

# metadata.parquet of a twin directory: the zoo schema plus the sparsity of each state
TWIN_SCHEMA = pa.schema([*METADATA_SCHEMA, ("sparsity", pa.float64())])


# ---------------------------------------------------------------------------------------------------------
# Batched sparsification network
# ---------------------------------------------------------------------------------------------------------


def normal(seeds: torch.Tensor, stream: int, step: int, n: int) -> torch.Tensor:
    """Standard normal float32 [M, n], element i of model m a pure function of (seed m, stream, step, i).

    Box–Muller on pairs: uniforms u1, u2 of pair k (streams ``stream``, ``stream + 1``) give elements 2k
    (r·cos θ) and 2k + 1 (r·sin θ), r = √(−2 ln(1 − u1)), θ = 2π·u2; |ε| ≤ 5.8 (24-bit uniforms).
    """
    pairs = torch.arange((n + 1) // 2, device=seeds.device)
    u1 = randomness.uniform(seeds.view(-1, 1), stream, step, pairs)
    u2 = randomness.uniform(seeds.view(-1, 1), stream + 1, step, pairs)
    r = torch.sqrt(-2.0 * torch.log1p(-u1))
    theta = (2 * math.pi) * u2
    return torch.stack((r * torch.cos(theta), r * torch.sin(theta)), dim=-1).reshape(seeds.numel(), -1)[:, :n]


def log_alpha(log_sigma2: torch.Tensor, w: torch.Tensor, kind: str) -> torch.Tensor:
    lo, hi = LOG_ALPHA_CLIP[kind]
    return torch.clamp(log_sigma2 - 2 * torch.log(torch.abs(w) + EPS), lo, hi)


def neg_kl(la: torch.Tensor) -> torch.Tensor:
    """−KL(q‖p) approximation per element (Molchanov et al. 2017, eq. 14), ≥ 0, decreasing in log α."""
    return -(K1 * torch.sigmoid(K2 + K3 * la) - 0.5 * torch.log1p(torch.exp(-la)) - K1)


class TwinCNN:
    """Batched train forward of M sparsified CNNs; eval runs the population engine's forward on sparse weights.

    Parameters: ``"<layer>.weight"``, ``"<layer>.bias"`` [M, *shape] as in the zoo layout; VD adds
    ``"<layer>.weight.log_sigma2"`` (every layer) and ``"<layer>.bias.log_sigma2"`` (conv layers).
    """

    def __init__(self, zoo: Zoo, activation: str, method: str, channels_last: bool = False) -> None:
        self.eval_net = PopulationCNN(get_architecture(zoo.architecture).layers, activation, channels_last)
        self.specs = self.eval_net.specs
        self.act = self.eval_net.act
        self.vd = METHODS[method].log_sigma2

    def ard_tensors(self) -> list[tuple[str, str]]:
        """(parameter name, layer kind) of every tensor with a log σ²: conv weights and biases, linear weights."""
        out = []
        for spec in self.specs:
            out.append((f"{spec.name}.weight", spec.kind))
            if spec.kind == "conv":
                out.append((f"{spec.name}.bias", spec.kind))
        return out

    def weight_names(self) -> list[str]:
        """The prunable tensors (sparsity counts their elements): every conv and linear weight."""
        return [f"{spec.name}.weight" for spec in self.specs]

    def forward(self, params: dict[str, torch.Tensor], x: torch.Tensor, seeds: torch.Tensor,
                p: torch.Tensor | None, step: int | torch.Tensor) -> torch.Tensor:
        """Train-mode logits [M, B, classes] for inputs [M, B, C, H, W] at global twin step ``step``
        (``p`` None: no dropout)."""
        m, b = x.shape[0], x.shape[1]
        h = x.transpose(0, 1).reshape(b, -1, *x.shape[-2:])  # [B, M·C, H, W]
        for i, spec in enumerate(self.specs):
            w, bias = params[f"{spec.name}.weight"], params[f"{spec.name}.bias"]
            if spec.kind == "conv":
                out = w.shape[1]
                h_in = h
                h = F.conv2d(h_in, w.reshape(m * out, *w.shape[2:]), bias.reshape(-1), groups=m)
                if self.vd:
                    var_w = torch.exp(log_alpha(params[f"{spec.name}.weight.log_sigma2"], w, "conv")) * w * w
                    var_b = torch.exp(log_alpha(params[f"{spec.name}.bias.log_sigma2"], bias, "conv")) * bias * bias
                    var = F.conv2d(h_in * h_in, var_w.reshape(m * out, *w.shape[2:]), var_b.reshape(-1), groups=m)
                    hh, ww = h.shape[-2:]
                    eps = normal(seeds, NOISE_STREAM + 2 * i, step, b * out * hh * ww)  # per model [B, O, H, W]
                    eps = eps.view(m, b, out, hh, ww).transpose(0, 1).reshape(h.shape)
                    h = h + torch.sqrt(EPS + var) * eps
                if spec.pool:
                    h = F.max_pool2d(h, 2, 2)
            else:
                if h.dim() == 4:  # flatten channel-major per model: [B, M·C, H, W] → [M, B, C·H·W]
                    h = h.reshape(b, m, -1).transpose(0, 1)
                mu = torch.bmm(h, w.transpose(1, 2))
                if self.vd:
                    var_w = torch.exp(log_alpha(params[f"{spec.name}.weight.log_sigma2"], w, "linear")) * w * w
                    var = torch.bmm(h * h, var_w.transpose(1, 2))
                    eps = normal(seeds, NOISE_STREAM + 2 * i, step, b * w.shape[1]).view(mu.shape)
                    mu = mu + torch.sqrt(EPS + var) * eps
                h = mu + bias.unsqueeze(1)
            if spec.act:
                h = self.act(h)
            if spec.dropout and p is not None:
                h = dropout(h, seeds, p, DROPOUT_STREAM + i, step, m, b)
        return h

    def kl(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ −KL per model, float32 [M] (the VD regulariser)."""
        total = 0
        for name, kind in self.ard_tensors():
            la = log_alpha(params[f"{name}.log_sigma2"], params[name], kind)
            total = total + neg_kl(la).flatten(1).sum(1)
        return total

    @torch.no_grad()
    def sparse(self, params: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(the eval-mode weights in the zoo's names with masked entries 0, sparsity float64 [M])."""
        out = {k: v.detach() for k, v in params.items() if not k.endswith(".log_sigma2")}
        if self.vd:
            for name, kind in self.ard_tensors():
                la = log_alpha(params[f"{name}.log_sigma2"], params[name], kind)
                out[name] = torch.where(la >= LOG_ALPHA_THRESHOLD, torch.zeros_like(out[name]), out[name])
        zeros = sum((out[n] == 0).flatten(1).sum(1) for n in self.weight_names())
        total = sum(out[n][0].numel() for n in self.weight_names())
        return out, zeros.double() / total


def mp_sparsity(epoch: int) -> float:
    """Target fraction of pruned weights during training epoch ``epoch`` ≥ 1 (cubic ramp, then constant)."""
    t = min(epoch, MP_RAMP_EPOCHS) / MP_RAMP_EPOCHS
    return MP_TARGET * (1 - (1 - t) ** 3)


@torch.no_grad()
def prune(params: dict[str, torch.Tensor], names: list[str], sparsity: float) -> dict[str, torch.Tensor]:
    """Zero the ⌊sparsity·N⌉ smallest |w| of each model over the tensors ``names`` together (in place).

    Returns the keep masks. Already pruned weights are exact zeros and sort first (stable sort), so
    the masks of a growing schedule are nested; they are a function of the weights alone.
    """
    flat = torch.cat([params[n].detach().flatten(1) for n in names], dim=1)  # [M, N]
    k = round(sparsity * flat.shape[1])
    order = torch.argsort(flat.abs(), dim=1, stable=True)
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep.scatter_(1, order[:, :k], False)
    masks, start = {}, 0
    for n in names:
        size = params[n][0].numel()
        masks[n] = keep[:, start : start + size].reshape(params[n].shape)
        params[n].mul_(masks[n])
        start += size
    return masks


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


@dataclass
class TwinEpoch(EpochResult):
    """An EpochResult whose ``weights`` are sparse, plus ``log_sigma2`` [M, D'] (VD) and ``sparsity`` in metrics."""

    log_sigma2: torch.Tensor | None = field(default=None)

    def tensors(self) -> dict[str, torch.Tensor]:
        return super().tensors() | ({} if self.log_sigma2 is None else {"log_sigma2": self.log_sigma2})


def _groups(configs: list[ModelConfig], dense: torch.Tensor, layout: Layout, net_ard: list[tuple[str, str]],
            method: str, device: torch.device) -> list[Group]:
    """Groups of the loaded dense models (``dense`` [M, D]); VD adds a log σ² = −10 per ARD tensor entry."""

    def params_of(index: list[int]) -> dict[str, torch.Tensor]:
        params = {k: v.clone() for k, v in layout.unflatten(dense[index].to(device)).items()}
        if METHODS[method].log_sigma2:
            for name, _ in net_ard:
                params[f"{name}.log_sigma2"] = torch.full_like(params[name], LOG_SIGMA2_INIT)
        return params

    return make_groups(configs, params_of, device)


def log_sigma2_layout(zoo: Zoo) -> Layout:
    """Layout of the stored ``log_sigma2`` vector: conv weights, conv biases, linear weights, in zoo order."""
    return zoo.layout.subset(n for n, _ in TwinCNN(zoo, "relu", "vd").ard_tensors())


def train_twins(zoo: Zoo, configs: list[ModelConfig], dense: torch.Tensor, data: ImageData, method: str,
                device: str | torch.device = "cpu", resume: Resume | None = None, stop: int = TWIN_EPOCHS,
                cuda_graphs: bool = True) -> Iterator[TwinEpoch]:
    """Sparsify a chunk of models from their dense states ``dense`` float32 [M, D]; yield epochs 0 … ``stop``.

    ``zoo`` gives architecture and layout; ``configs`` the models' hyperparameters (seed, optimizer, lr,
    weight decay, dropout, batch size). ``resume = (epoch, state)`` continues after ``epoch``. Training runs
    through the population engine's ``GroupSteps`` (CUDA graphs on CUDA, ``cuda_graphs``).
    """
    device = torch.device(device)
    channels_last = numerics(device)["channels_last"]
    layout = zoo.layout
    variational, schedule = METHODS[method].log_sigma2, METHODS[method].sparsity
    ls_layout = log_sigma2_layout(zoo) if variational else None
    nets = {}
    for c in configs:
        nets.setdefault(c.activation, TwinCNN(zoo, c.activation, method, channels_last))
    ard = next(iter(nets.values())).ard_tensors()
    groups = _groups(configs, dense, layout, ard, method, device)
    gnets = [nets[g.activation] for g in groups]
    images, labels = data.train.images.to(device), data.train.labels.to(device)
    n = labels.numel()
    masks: list[dict[str, torch.Tensor]] = [{} for _ in groups]  # magnitude pruning: the keep masks per group

    def steps(g: Group, net: TwinCNN, keep: dict[str, torch.Tensor]) -> GroupSteps:
        def remask() -> None:
            for name, mask in keep.items():
                g.params[name].mul_(mask)

        return GroupSteps(g, net.forward, images, labels, configs[0].batch_size, cuda_graphs,
                          lambda epoch: randomness.permutation(g.seeds.view(-1, 1), DATA_ORDER_STREAM, epoch, n,
                                                              device),
                          penalty=net.kl if variational else None, after_update=remask if schedule else None)

    steppers = [steps(g, net, keep) for g, net, keep in zip(groups, gnets, masks, strict=True)]

    def record(epoch: int, train_metrics: list[tuple[torch.Tensor, torch.Tensor]] | None) -> TwinEpoch:
        values = {k: [math.nan] * len(configs) for k in (*METRICS, "sparsity")}
        weights = torch.empty(len(configs), layout.size)
        ls2 = torch.empty(len(configs), ls_layout.size) if ls_layout is not None else None
        for gi, (g, net) in enumerate(zip(groups, gnets, strict=True)):
            if epoch == 0:  # the loaded dense model, unmasked
                params = {k: v.detach() for k, v in g.params.items() if not k.endswith(".log_sigma2")}
                sparsity = torch.zeros(g.m, dtype=torch.float64)
            else:
                params, sparsity = net.sparse(g.params)
            record_metrics(values, g, net.eval_net, params, data, device,
                           train_metrics[gi] if train_metrics is not None else None, sparsity=sparsity)
            weights[g.index] = layout.flatten({k: v.cpu() for k, v in params.items()})
            if ls2 is not None:
                ls2[g.index] = ls_layout.flatten({e.name: g.params[f"{e.name}.log_sigma2"].detach().cpu()
                                                  for e in ls_layout.entries})
        return TwinEpoch(epoch, weights, values, pack_groups(groups, int(steppers[0].step)), log_sigma2=ls2)

    def restore(state: dict[str, torch.Tensor]) -> None:
        step = unpack_groups(state, groups)
        for st in steppers:
            st.step.fill_(step)

    def train_epoch(epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        kl_weight = min(1.0, KL_RAMP * (epoch - 1) / TWIN_EPOCHS)
        metrics = []
        for g, net, keep, st in zip(groups, gnets, masks, steppers, strict=True):
            if schedule is not None:  # the epoch's masks, updated in place (a captured step reads these tensors)
                for name, mask in prune(g.params, net.weight_names(), schedule(epoch)).items():
                    keep.setdefault(name, mask).copy_(mask)
            metrics.append(st.epoch(epoch, kl_weight))
        return metrics

    return run_epochs(record, train_epoch, restore, resume, stop)


# ---------------------------------------------------------------------------------------------------------
# The twin directory
# ---------------------------------------------------------------------------------------------------------


def twin_zoo(source: Zoo, method: str) -> Zoo:
    """The spec of the twins: the source's, renamed ``<source>_sparse_<method>``, ``epochs = TWIN_EPOCHS``."""
    d = source.to_dict()
    label = METHODS[method].label
    d |= {"name": twin_name(source.name, method), "epochs": TWIN_EPOCHS,
          "description": f"Sparsified twins ({label}, {TWIN_EPOCHS} epochs) of every model of {source.name}",
          "source": SOURCES.get((source.name, method), ""),
          "notes": [*d["notes"], f"Twin: every final model of {source.name} sparsified by {label} (modelzoos.twins)."]}
    return Zoo.from_dict(d, f"twins of {source.path or source.name}")


def _check_source(source: ZooDir, models: int | None) -> tuple[int, int]:
    """(models, final epoch) to sparsify; clear errors for zoos without twins."""
    zoo = source.zoo
    if get_architecture(zoo.architecture).layers is None:
        raise ValueError(f"{source.path}: zoo {zoo.name} has architecture {zoo.architecture!r}; sparsified twins "
                         "exist for the LayerSpec CNNs only (ARD layers): pick a CNN zoo directory")
    if zoo.data.augment != "none" or zoo.schedule != "constant":
        raise ValueError(f"{source.path}: zoo {zoo.name} uses augmentation or an LR schedule; twins support the "
                         "CNN protocol (no augmentation, constant LR)")
    meta = source.metadata
    last = int(source.info["run"]["epochs"])
    have = int(meta.model_id.nunique())
    models = have if models is None else models
    if not 1 <= models <= have:
        raise ValueError(f"--models must be in 1..{have} for {source.path} (it holds {have} models), got {models}")
    final = meta[(meta.epoch == last) & (meta.model_id < models)]
    if last < 1 or sorted(final.model_id) != list(range(models)):
        raise ZooFileError(f"{source.path} lacks the final epoch {last} of models 0..{models - 1} (or was trained for "
                           "0 epochs); sparsify a finished zoo with trained models")
    return models, last


@dataclass(frozen=True)
class Twins:
    """The producer of a twin directory (``export.Producer``): ``run`` = the twins of the first models of
    ``source``, sparsified from their states after epoch ``source_epoch`` by ``method``."""

    run: Run
    source: ZooDir
    source_epoch: int
    method: str
    data: ImageData
    device: str
    schema: pa.Schema = TWIN_SCHEMA
    sections: tuple[str, ...] = ("twins",)

    def describe(self) -> dict:
        record = {"method": self.method, "settings": METHODS[self.method].settings,
                  "source_path": str(self.source.path.resolve()), "source_run": self.source.info["run"],
                  "source_epoch": self.source_epoch}
        if METHODS[self.method].log_sigma2:
            record["log_sigma2_layout"] = log_sigma2_layout(self.run.zoo).to_json()
        return describe(self.run, self.data, self.device, twins=record)

    def __call__(self, chunk: list[ModelConfig], resume: Resume | None) -> Iterator[TwinEpoch]:
        meta = self.source.metadata
        ids = [c.model_id for c in chunk]
        rows = meta.index[(meta.epoch == self.source_epoch) & meta.model_id.isin(ids)]
        order = {int(meta.model_id[i]): int(i) for i in rows}
        dense = np.empty((len(ids), self.run.zoo.layout.size), dtype=np.float32)
        self.source.read_rows(np.asarray([order[m] for m in ids]), dense)
        return train_twins(self.run.zoo, chunk, torch.from_numpy(dense), self.data, self.method, self.device,
                           resume=resume, stop=self.run.epochs)


def sparsify(source: ZooDir | str | Path, out: str | Path, method: str, device: str = "cpu",
             models: int | None = None, progress: bool = True, *, epochs: int = TWIN_EPOCHS,
             chunk_size: int | None = None, data_root: str | Path | None = None, download: bool = False) -> ZooDir:
    """Sparsify every model's final state of the finished CNN zoo directory ``source`` into the directory ``out``.

    ``method``: ``"vd"`` (variational dropout) or ``"mp"`` (magnitude pruning), see the module docstring.
    ``models``: the first N models of the source (default all). ``epochs``: stop after the first E of the
    25 twin epochs (schedules unchanged). ``chunk_size``: models trained together (default all).
    Resumable: rerunning the same call continues where it stopped; a finished directory is left as is.
    Returns the twin directory, whose ``metadata`` has the extra column ``sparsity``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown sparsification method {method!r}; valid: {', '.join(METHODS)}")
    if not 0 <= epochs <= TWIN_EPOCHS:
        raise ValueError(f"epochs must be in 0..{TWIN_EPOCHS}, got {epochs}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"--chunk-size must be at least 1, got {chunk_size}")
    check_device(device)
    src = source if isinstance(source, ZooDir) else ZooDir(source)
    models, last = _check_source(src, models)
    src.check_files()  # every byte as recorded: damaged weights would be sparsified
    zoo = twin_zoo(src.zoo, method)
    run = Run(zoo, models, epochs, f"twins_{method}", chunk_size or models)
    data = load_image_data(zoo.data, data_root, download=download)
    if data.sha256 != src.info["data"]["sha256"]:
        raise ZooFileError(f"the image data of {zoo.data.dataset} here (sha256 {data.sha256[:12]}…) differs from "
                           f"the data {src.path} was trained on ({src.info['data']['sha256'][:12]}…); use the same "
                           "data root")
    return produce(out, Twins(run, src, last, method, data, device), progress=progress)


# ---------------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------------


def summary(twin: ZooDir) -> dict:
    """Per epoch: quartiles (p25, median, p75) across models of sparsity, test accuracy and its drop from epoch 0."""
    meta = twin.metadata
    base = meta[meta.epoch == 0].set_index("model_id").test_acc
    drop = base.reindex(meta.model_id).to_numpy() - meta.test_acc.to_numpy()
    frame = meta.assign(acc_drop=drop)
    out = {}
    for epoch, g in frame.groupby("epoch"):
        out[int(epoch)] = {c: [float(np.nanquantile(g[c], q)) for q in (0.25, 0.5, 0.75)]
                           for c in ("sparsity", "test_acc", "acc_drop")}
    return out
