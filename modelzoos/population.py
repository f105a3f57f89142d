"""Population engine: train many CNNs of one zoo at once, batched along a model axis.

One optimizer step updates every model of a group; each model keeps its own protocol: its own initial
weights (built exactly like the reference engine), its own data order and dropout masks (``randomness``,
keyed by ``randomness.model_key`` as in the reference engine) and its own learning rate / weight decay /
dropout probability. Models that differ in activation or optimizer type run as separate groups, one after
another within each epoch.

Layout of activations: convolutions run as one grouped convolution over ``[B, M·C, H, W]`` (group m =
model m), linear layers as one batched matmul over ``[M, B, F]``. The whole split lives on the device;
val/test evaluation is batched over models with the first layer shared (one ungrouped convolution).

``GroupSteps`` runs a group's training steps as a fixed sequence of device operations, captured once as a
CUDA graph and replayed on CUDA; the sparsified twins (``modelzoos.twins``) train through it too, with their
own forward, penalty and post-update masks. The zoo engine's step comes from ``KERNEL_STEPS`` by the
``MODELZOOS_KERNELS`` switch: PyTorch operations (``torch``, the default) or one fused Triton kernel for all
models of a group (``fused``, ``modelzoos.kernels``).

Numerics: float32 throughout, the optimizers' math of ``modelzoos.optimizers`` (torch's formulas, coupled
L2), so results agree with the reference engine to float rounding (tests: ≤ 1e-4 after one epoch).
Activations are channels-last on CPU and in PyTorch's layout on CUDA (the ``training.numerics`` defaults,
the faster layout measured on each, BENCHMARKS.md), switchable with ``MODELZOOS_CHANNELS_LAST``;
``MODELZOOS_TF32=1`` opts into TF32 on GPUs (docs/protocol.md, "Numerics").
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from modelzoos import randomness
from modelzoos.architectures import ACTIVATIONS, LayerSpec, Layout, build_model, get_architecture
from modelzoos.catalogue import ModelConfig, Zoo
from modelzoos.data import ImageData, Split
from modelzoos.optimizers import OPTIMIZERS
from modelzoos.training import METRICS, EpochResult, Resume, numerics, run_epochs

# input floats (images × models) per batched eval forward: cache-sized on CPU, large enough to fill a GPU
# (2**26: 85 images × 1,000 MNIST models, ≈ 2 GB of activations); each the faster measured (BENCHMARKS.md)
EVAL_ELEMENTS = {"cpu": 2**20, "cuda": 2**26}

Params = dict[str, torch.Tensor]


@dataclass
class Group:
    """Models of one chunk that run as one batched program (same activation and optimizer type)."""

    index: list[int]  # positions in the chunk
    configs: list[ModelConfig]
    params: Params  # name → [M, *shape], requires grad
    opt_state: Params  # "<name>.<slot>" → [M, *shape] (the slots of optimizers.OPTIMIZERS)
    seeds: torch.Tensor  # int64 [M]
    lr: torch.Tensor  # float32 [M]
    wd: torch.Tensor  # float32 [M]
    p: torch.Tensor  # dropout probability, float32 [M]

    @property
    def m(self) -> int:
        return len(self.configs)

    @property
    def optimizer(self) -> str:
        return self.configs[0].optimizer

    @property
    def activation(self) -> str:
        return self.configs[0].activation

    @property
    def dropout(self) -> torch.Tensor | None:
        """``p``, or None when no model of the group drops out (then no masks are drawn); read from the configs
        (``p`` holds their dropout), so no device sync."""
        return self.p if any(c.dropout > 0 for c in self.configs) else None


def dropout(h: torch.Tensor, seeds: torch.Tensor, p: torch.Tensor, stream: int, step: int | torch.Tensor,
            m: int, b: int) -> torch.Tensor:
    """Per-model inverted dropout of batched activations with the element indexing of
    ``architectures.KeyedDropout`` for one model; ``h`` is [B, M·C, H, W] (conv) or [M, B, F] (linear)."""
    if h.dim() == 4:  # [B, M·C, H, W]: per-model element index of [B, C, H, W]
        c, hh, ww = h.shape[1] // m, h.shape[2], h.shape[3]
        idx = torch.arange(b * c * hh * ww, device=h.device).reshape(b, 1, c, hh, ww)
        u = randomness.uniform(seeds.view(1, m, 1, 1, 1), stream, step, idx)
        pm = p.view(1, m, 1, 1, 1)
        return (h.reshape(b, m, c, hh, ww) * (u >= pm) / (1 - pm)).reshape(h.shape)
    idx = torch.arange(b * h.shape[2], device=h.device).reshape(1, b, -1)
    u = randomness.uniform(seeds.view(m, 1, 1), stream, step, idx)
    pm = p.view(m, 1, 1)
    return h * (u >= pm) / (1 - pm)


class PopulationCNN:
    """Batched forward of M models of one LayerSpec table (``Architecture.layers``) and one activation."""

    def __init__(self, layers: tuple[LayerSpec, ...], activation: str, channels_last: bool = False) -> None:
        self.specs = layers
        self.act = ACTIVATIONS[activation]()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, params: Params, x: torch.Tensor, seeds: torch.Tensor | None = None,
                p: torch.Tensor | None = None, step: int | torch.Tensor = 0,
                shared_input: bool = False) -> torch.Tensor:
        """Logits [M, B, classes] for inputs [M, B, C, H, W] (or [B, C, H, W] with ``shared_input``).

        ``seeds`` and ``p`` given: training forward with each model's dropout masks for global ``step``
        (``seeds``: the models' keys, e.g. ``randomness.model_key``).
        """
        m = params[f"{self.specs[0].name}.weight"].shape[0]
        if shared_input:
            b = x.shape[0]
        else:
            b = x.shape[1]
            x = x.transpose(0, 1).reshape(b, -1, *x.shape[-2:])  # [B, M·C, H, W]
        h = x.contiguous(memory_format=self.memory_format)
        for i, spec in enumerate(self.specs):
            w, bias = params[f"{spec.name}.weight"], params[f"{spec.name}.bias"]
            if spec.kind == "conv":
                out = w.shape[1]
                groups = 1 if (i == 0 and shared_input) else m
                w = w.reshape(m * out, *w.shape[2:]).contiguous(memory_format=self.memory_format)
                h = F.conv2d(h, w, bias.reshape(-1), groups=groups)
                if spec.pool:
                    h = F.max_pool2d(h, 2, 2)
            else:
                if h.dim() == 4:  # flatten channel-major per model: [B, M·C, H, W] → [M, B, C·H·W]
                    h = h.reshape(b, m, -1).transpose(0, 1)
                h = torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2))
            if spec.act:
                h = self.act(h)
            if spec.dropout and p is not None:
                h = dropout(h, seeds, p, randomness.DROPOUT + i, step, m, b)
        return h


# ---------------------------------------------------------------------------------------------------------
# Groups, metrics and the resumable state
# ---------------------------------------------------------------------------------------------------------


def make_groups(configs: list[ModelConfig], params_of: Callable[[list[int]], Params],
                device: torch.device) -> list[Group]:
    """The chunk's models grouped by (activation, optimizer type), in order of first appearance.

    ``params_of(index)`` gives the initial parameters [M, *shape] on ``device`` of the models at positions
    ``index``; each group gets them as leaves that require grad, zeroed optimizer state and its models'
    seeds, learning rates, weight decays and dropout probabilities as device tensors.
    """
    keys: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(configs):
        keys.setdefault((c.activation, c.optimizer), []).append(i)
    groups = []
    for (_, optimizer), index in keys.items():
        cs = [configs[i] for i in index]
        params = {k: v.requires_grad_() for k, v in params_of(index).items()}
        slots = OPTIMIZERS[optimizer].slots
        opt_state = {f"{k}.{s}": torch.zeros_like(v, requires_grad=False) for k, v in params.items() for s in slots}
        t = lambda vals, dt=torch.float32: torch.tensor(vals, dtype=dt, device=device)  # noqa: E731
        groups.append(Group(index, cs, params, opt_state, t([c.seed for c in cs], torch.int64),
                            t([c.lr for c in cs]), t([c.weight_decay for c in cs]), t([c.dropout for c in cs])))
    return groups


def initial_groups(zoo: Zoo, configs: list[ModelConfig], device: torch.device) -> list[Group]:
    """Groups of freshly initialised models, each built exactly as the reference engine builds it."""

    def params_of(index: list[int]) -> Params:
        states = [build_model(zoo.architecture, in_channels=zoo.in_channels, num_classes=zoo.num_classes,
                              activation=c.activation, dropout=c.dropout, init=c.init, seed=c.seed).state_dict()
                  for c in (configs[i] for i in index)]
        return {k: torch.stack([s[k] for s in states]).to(device) for k in states[0]}

    return make_groups(configs, params_of, device)


def record_metrics(values: dict[str, list[float]], g: Group, net: PopulationCNN, params: Params,
                   data: ImageData, device: torch.device, train: tuple[torch.Tensor, torch.Tensor] | None,
                   **extra: torch.Tensor) -> None:
    """Write one group's per-model metrics into ``values`` (column → one value per chunk model) at its positions.

    ``train``: the epoch's running (loss, accuracy) of the train-mode forwards, or None for an eval pass
    over the train split (epoch 0); val (if the data has it) and test: eval passes with ``params``;
    ``extra``: further columns [M]. One device→host copy per column.
    """
    cols = dict(zip(("train_loss", "train_acc"), train if train is not None
                    else evaluate(net, params, data.train, device), strict=True))
    if data.val is not None:
        cols["val_loss"], cols["val_acc"] = evaluate(net, params, data.val, device)
    cols["test_loss"], cols["test_acc"] = evaluate(net, params, data.test, device)
    for k, v in (cols | extra).items():
        for i, x in zip(g.index, v.tolist(), strict=True):
            values[k][i] = x


@torch.no_grad()
def evaluate(net: PopulationCNN, params: Params, split: Split, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-model (mean cross-entropy, accuracy), float64 [M] each, over a whole split in eval mode."""
    m = next(iter(params.values())).shape[0]
    n = split.labels.numel()
    per_image = split.images[0].numel() * m
    batch = max(1, min(n, EVAL_ELEMENTS.get(device.type, EVAL_ELEMENTS["cpu"]) // per_image))
    loss = torch.zeros(m, dtype=torch.float64, device=device)
    correct = torch.zeros(m, dtype=torch.int64, device=device)
    for s in range(0, n, batch):
        x = split.images[s : s + batch].to(device)
        y = split.labels[s : s + batch].to(device)
        logits = net.forward(params, x, shared_input=True)  # [M, b, K]
        loss += F.cross_entropy(logits.transpose(1, 2), y.expand(m, -1), reduction="none").sum(1).double()
        correct += (logits.argmax(2) == y).sum(1)
    return loss / n, correct.double() / n


def optimizer_tensors(groups: list[Group], models: int, params: Layout, step: int) -> dict[str, torch.Tensor]:
    """``EpochResult.optimizer`` of a chunk of ``models`` models: every slot of the chunk's optimizers flattened in
    ``params`` [models, P] (NaN rows for models whose optimizer has no such slot), and the steps taken."""
    slots = dict.fromkeys(s for g in groups for s in OPTIMIZERS[g.optimizer].slots)
    out = {s: torch.full((models, params.size), math.nan) for s in slots}
    for g in groups:
        for s in OPTIMIZERS[g.optimizer].slots:
            out[s][g.index] = params.flatten({e.name: g.opt_state[f"{e.name}.{s}"].detach().cpu()
                                              for e in params.entries})
    return out | {"step": torch.full((models,), step, dtype=torch.int64)}


def pack_groups(groups: list[Group], step: int) -> dict[str, torch.Tensor]:
    """The resumable state of a chunk (CPU tensors): every group's parameters and optimizer state, and the
    optimizer steps taken; ``unpack_groups`` restores it."""
    state = {"step": torch.tensor(step, dtype=torch.int64)}
    for gi, g in enumerate(groups):
        for k, v in g.params.items():
            state[f"g{gi}.param.{k}"] = v.detach().cpu().clone()
        for k, v in g.opt_state.items():
            state[f"g{gi}.opt.{k}"] = v.detach().cpu().clone()
    return state


def unpack_groups(state: dict[str, torch.Tensor], groups: list[Group]) -> int:
    """Copy a ``pack_groups`` state into ``groups`` (in place); returns the optimizer steps taken."""
    with torch.no_grad():
        for gi, g in enumerate(groups):
            for k, v in g.params.items():
                v.copy_(state[f"g{gi}.param.{k}"])
            for k, v in g.opt_state.items():
                v.copy_(state[f"g{gi}.opt.{k}"])
    return int(state["step"])


# ---------------------------------------------------------------------------------------------------------
# Training steps and the engine
# ---------------------------------------------------------------------------------------------------------


def model_keys(g: Group) -> Callable[[int], torch.Tensor]:
    """The keys of a group's random draws: epoch → int64 [M] on the group's device, each model's
    ``randomness.model_key`` (its seed and RNG-consumption class; the reference engine's keys too)."""
    return lambda epoch: torch.tensor([randomness.model_key(c.seed, c.init, c.dropout, epoch) for c in g.configs],
                                      dtype=torch.int64, device=g.seeds.device)


def data_order(g: Group, n: int) -> Callable[[int], torch.Tensor]:
    """The engine's data order of a group over ``n`` training images: epoch → int64 [M, n] on the group's
    device, each model's own permutation keyed by its ``model_keys`` (the reference engine's order too)."""
    keys = model_keys(g)
    return lambda epoch: randomness.permutation(keys(epoch).view(-1, 1), randomness.DATA_ORDER, epoch, n,
                                                g.seeds.device)


# A fused training step (``KERNEL_STEPS``): (batch index [M, b] into the train split, the epoch's keys int64 [M],
# optimizer steps done so far as a device scalar) → per-model (mean loss float32 [M], correct predictions int64
# [M]), with every model's parameters and optimizer state updated in place
KernelStep = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

# MODELZOOS_KERNELS (training.numerics) → the factory of a group's KernelStep, (group, net, train images, labels,
# batch size) → KernelStep, imported when chosen (the fused kernels need Triton); None: GroupSteps' PyTorch step
KERNEL_STEPS: dict[str, Callable[[], Callable[..., KernelStep]] | None] = {
    "torch": None,
    "fused": lambda: importlib.import_module("modelzoos.kernels").fused_step,
}


class GroupSteps:
    """One group's training steps as a fixed sequence of device operations.

    A step: ``forward(params, x, keys, p, step)`` on the batch (``p`` None: no dropout), mean cross-entropy
    per model (plus ``penalty(params)`` [M] times the epoch's penalty weight), backward, the group's
    optimizer update (``optimizers.OPTIMIZERS``), then ``after_update()`` (e.g. re-applying pruning masks);
    or, with ``kernel``, all of it in one ``KernelStep`` (no penalty, no ``after_update``).
    ``order(epoch)`` gives the epoch's data order, int64 [M, n]; ``keys(epoch)`` the keys of its random draws,
    int64 [M] (``model_keys``; default: the group's seeds throughout). The batch position and the optimizer step
    count are device tensors that each step advances itself, so on CUDA a full-batch step is captured once
    into a CUDA graph (after ``WARMUP`` eager steps) and replayed: the same kernels on the same buffers
    without Python or launch overhead per step. The partial last batch of an epoch, if any, runs eagerly.
    Whatever else the step reads (masks) must be updated in place between epochs.
    """

    WARMUP = 3  # eager steps on a side stream before capture (lazy initialisation, cuDNN workspaces)

    def __init__(self, g: Group, forward: Callable[..., torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
                 batch_size: int, cuda_graphs: bool, order: Callable[[int], torch.Tensor], *,
                 keys: Callable[[int], torch.Tensor] | None = None,
                 penalty: Callable[[Params], torch.Tensor] | None = None,
                 after_update: Callable[[], None] | None = None, kernel: KernelStep | None = None) -> None:
        if kernel is not None and (penalty is not None or after_update is not None):
            raise ValueError("a fused kernel step computes the plain cross-entropy step: no penalty, no after_update")
        dev = labels.device
        self.g, self.forward, self.images, self.labels, self.bs = g, forward, images, labels, batch_size
        self.order_of, self.penalty, self.after_update, self.kernel = order, penalty, after_update, kernel
        self.n = labels.numel()
        self.step = torch.zeros((), dtype=torch.int64, device=dev)  # optimizer steps done so far
        self.batch = torch.zeros((), dtype=torch.int64, device=dev)  # batch index within the epoch
        self.order = torch.empty(g.m, self.n, dtype=torch.int64, device=dev)
        self.loss_sum = torch.zeros(g.m, dtype=torch.float64, device=dev)
        self.correct = torch.zeros(g.m, dtype=torch.int64, device=dev)
        self.penalty_weight = torch.zeros((), dtype=torch.float32, device=dev)
        self.update = OPTIMIZERS[g.optimizer].step
        self.p = g.dropout
        self.keys_of = keys
        self.keys = g.seeds.clone()  # the epoch's keys of the masks, updated in place: a captured graph reads it
        self.capture = cuda_graphs and dev.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None

    def epoch(self, epoch: int, penalty_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Train one epoch; per-model (mean train loss, train accuracy) of the train-mode forwards (the
        cross-entropy, without the penalty)."""
        if self.keys_of is not None:
            self.keys.copy_(self.keys_of(epoch))
        self.order.copy_(self.order_of(epoch))
        self.penalty_weight.fill_(penalty_weight)
        for t in (self.batch, self.loss_sum, self.correct):
            t.zero_()
        full, rest = divmod(self.n, self.bs)
        done = 0
        if self.capture and self.graph is None and full > self.WARMUP:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.WARMUP):
                    self._step(self.bs)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):  # records one step without running it
                self._step(self.bs)
            done = self.WARMUP
        for _ in range(done, full):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step(self.bs)
        if rest:
            self._step(rest)
        return self.loss_sum / self.n, self.correct.double() / self.n

    def _step(self, b: int) -> None:
        """Batch number ``self.batch`` of size ``b``: forward, backward, update, running train metrics."""
        cols = self.batch * self.bs + torch.arange(b, device=self.batch.device)
        idx = self.order.index_select(1, cols)  # [M, b]
        losses, correct = self._torch_step(idx) if self.kernel is None else self.kernel(idx, self.keys, self.step)
        with torch.no_grad():
            self.step.add_(1)
            self.batch.add_(1)
            self.loss_sum.add_(losses.double() * b)
            self.correct.add_(correct)

    def _torch_step(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step in PyTorch operations for batch ``idx`` [M, b]: per-model (cross-entropy, correct predictions)."""
        g = self.g
        x, y = self.images[idx], self.labels[idx]  # [M, b, C, H, W], [M, b]
        logits = self.forward(g.params, x, self.keys, self.p, self.step)
        losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)  # [M]
        total = losses if self.penalty is None else losses + self.penalty_weight * self.penalty(g.params)
        total.sum().backward()
        with torch.no_grad():
            self.update(g.params, g.opt_state, g.lr, g.wd, self.step + 1)
            if self.after_update is not None:
                self.after_update()
            return losses.detach(), (logits.argmax(2) == y).sum(1)


def zoo_steps(g: Group, net: PopulationCNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
              cuda_graphs: bool, kernels: str) -> GroupSteps:
    """The training steps of a zoo group: its ``data_order`` and ``model_keys``, and the step that
    ``MODELZOOS_KERNELS=kernels`` picks (``KERNEL_STEPS``)."""
    fused = KERNEL_STEPS[kernels]
    return GroupSteps(g, net.forward, images, labels, batch_size, cuda_graphs, data_order(g, labels.numel()),
                      keys=model_keys(g), kernel=None if fused is None else fused()(g, net, images, labels, batch_size))


def train_population(zoo: Zoo, configs: list[ModelConfig], data: ImageData, device: str | torch.device = "cpu",
                     resume: Resume | None = None, stop: int | None = None,
                     cuda_graphs: bool = True) -> Iterator[EpochResult]:
    """Train a chunk of models of a CNN zoo together; yields epoch 0 and every epoch up to ``stop``.

    ``cuda_graphs``: on CUDA, replay each group's training step as a captured graph (``GroupSteps``); the
    results are those of eager execution (checked by ``benchmarks/gpu_check.py``).
    """
    layers = get_architecture(zoo.architecture).layers
    if layers is None:
        raise ValueError(f"the population engine batches the LayerSpec CNNs; zoo {zoo.name} is "
                         f"{zoo.architecture!r}: use --engine reference")
    if data.recipe.augment != "none" or zoo.schedule != "constant":
        raise ValueError("the population engine supports zoos without augmentation and LR schedule")
    device = torch.device(device)
    layout = zoo.layout
    groups = initial_groups(zoo, configs, device)
    flags = numerics(device)
    nets = [PopulationCNN(layers, g.activation, flags["channels_last"]) for g in groups]
    images, labels = data.train.images.to(device), data.train.labels.to(device)
    steppers = [zoo_steps(g, net, images, labels, configs[0].batch_size, cuda_graphs, flags["kernels"])
                for g, net in zip(groups, nets, strict=True)]

    def record(epoch: int, train_metrics: list[tuple[torch.Tensor, torch.Tensor]] | None) -> EpochResult:
        values = {k: [math.nan] * len(configs) for k in METRICS}
        weights = torch.empty(len(configs), layout.size)
        for gi, (g, net) in enumerate(zip(groups, nets, strict=True)):
            params = {k: v.detach() for k, v in g.params.items()}
            record_metrics(values, g, net, params, data, device,
                           train_metrics[gi] if train_metrics is not None else None)
            weights[g.index] = layout.flatten({k: v.cpu() for k, v in params.items()})
        step = int(steppers[0].step)
        return EpochResult(epoch, weights, values, pack_groups(groups, step),
                           optimizer_tensors(groups, len(configs), layout.parameters(), step))

    def restore(state: dict[str, torch.Tensor]) -> None:
        step = unpack_groups(state, groups)
        for st in steppers:
            st.step.fill_(step)

    return run_epochs(record, lambda epoch: [st.epoch(epoch) for st in steppers], restore, resume,
                      configs[0].epochs if stop is None else stop)
