"""The fused training step (``MODELZOOS_KERNELS=fused``): one Triton launch per step for a group of models.

``fused_step`` is the population engine's ``KernelStep`` factory for the switch value ``fused``
(``population.KERNEL_STEPS``): the same step as ``population.GroupSteps``' PyTorch one (same data order, same
dropout masks from the models' ``randomness.model_key``, same update formulas) to float32 rounding
(tests/test_kernels.py, in Triton's interpreter). ``plan`` turns a LayerSpec table into the kernel's
compile-time sizes; the kernel itself is ``cnn_step.train_step_kernel``.

Where it runs: on CUDA, compiled by Triton; on the CPU only in Triton's interpreter (``TRITON_INTERPRET=1``
in the environment; slow, for tests). The kernel module is re-imported when that variable changed since it
was first imported (Triton reads it when the kernels are defined).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType

import torch

from modelzoos import randomness
from modelzoos.architectures import LayerSpec
from modelzoos.optimizers import OPTIMIZERS, adam_corrections
from modelzoos.population import Group, KernelStep, PopulationCNN
from modelzoos.training import numerics

ACTIVATION_CODES = {"tanh": 0, "sigmoid": 1, "relu": 2, "gelu": 3}  # cnn_step's ACT
OPTIMIZER_CODES = {"adam": 0, "sgd": 1}  # cnn_step's OPT
LAYER_KINDS = ("conv", "conv", "conv", "linear", "linear")  # the layer tables the kernel covers: CNN-s, CNN-m
# Launch shape, chosen without a GPU so far (benchmarks/kernels.py compile: no spills for sm_90; the GPU
# sweep of benchmarks/kernels.py steps picks among these once measured)
BLOCK_ROWS = 32  # output positions per tile of a convolution stage
BLOCK_K = 16  # reduction elements per product (channels × taps): an FMA dot holds its K extent per thread
NUM_WARPS = 4  # per program (one model)
NUM_STAGES = 1  # no software pipelining: Triton's default (3) multi-buffers every loop's loads in shared memory


class KernelError(RuntimeError):
    """The fused kernels cannot run here; the message says why and what to set."""


@dataclass(frozen=True)
class Plan:
    """Compile-time sizes of the kernel for one LayerSpec table, input shape and batch size."""

    constants: dict[str, int | str]  # train_step_kernel's constexpr arguments
    scratch: int  # float32 scratch elements per model
    argmax: int  # int8 pooling-argmax elements per model


def _pad(n: int) -> int:
    """Next power of two, at least 16 (``tl.dot`` operands)."""
    return max(16, 1 << (n - 1).bit_length())


def plan(specs: tuple[LayerSpec, ...], in_channels: int, size: int, classes: int, batch: int, activation: str,
         optimizer: str, dropout: bool, tf32: bool = False, block_rows: int = BLOCK_ROWS,
         block_k: int = BLOCK_K) -> Plan:
    """The kernel's sizes for ``specs`` on ``in_channels × size × size`` inputs, batches of ≤ ``batch``.

    ``dropout`` False leaves the masks out (no model of the group drops anything). ``tf32`` lets the
    products use TF32 tensor cores (``MODELZOOS_TF32``), else they are float32 FMAs.
    """
    if tuple(s.kind for s in specs) != LAYER_KINDS or not all(s.act for s in specs[:-1]) or specs[-1].act \
            or specs[-1].dropout:
        raise KernelError(f"the fused kernels cover 3 convolutions + 2 linear layers (CNN-s, CNN-m), got "
                          f"{[s.name for s in specs]}; use MODELZOOS_KERNELS=torch")
    c: dict[str, int | str] = {"C0": in_channels, "H0": size}
    channels, h, scratch, argmax = in_channels, size, 0, 0
    for layer, s in enumerate(specs[:3], 1):
        fan_in = channels * s.kernel**2
        h = (h - s.kernel + 1) // (2 if s.pool else 1)
        if h < 1:
            raise KernelError(f"{s.name}: input {size}×{size} is too small for {[x.name for x in specs]}")
        c |= {f"K{layer}": s.kernel, f"C{layer}": s.out, f"P{layer}": int(s.pool),
              f"D{layer}": int(s.dropout and dropout), f"C{layer}P": _pad(s.out),
              f"BK{layer}": min(_pad(fan_in), block_k)}
        if layer > 1:
            c[f"BKT{layer}"] = min(_pad(s.out * s.kernel**2), block_k)
        scratch += 2 * batch * s.out * h * h
        argmax += batch * s.out * h * h
        channels = s.out
    c |= {"F4": specs[3].out, "D4": int(specs[3].dropout and dropout), "F5": classes, "F4P": _pad(specs[3].out),
          "F5P": _pad(classes)}
    c |= {f"MIX{i + 1}": randomness.stream_mix(randomness.DROPOUT + i) for i in range(4)}
    c |= {"BMAX": batch, "BP": _pad(batch), "BR": block_rows, "ACT": ACTIVATION_CODES[activation],
          "OPT": OPTIMIZER_CODES[optimizer], "PREC": "tf32" if tf32 else "ieee"}
    return Plan(c, scratch, argmax)


def kernel_module(device: torch.device) -> ModuleType:
    """``cnn_step``, defined for ``device``: compiled on CUDA, interpreted on the CPU (TRITON_INTERPRET=1)."""
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if device.type == "cpu" and not interpret:
        raise KernelError("MODELZOOS_KERNELS=fused runs Triton kernels on a CUDA GPU; on the CPU only in Triton's "
                          "interpreter: set TRITON_INTERPRET=1 (slow, meant for tests) or MODELZOOS_KERNELS=torch")
    if device.type == "cuda" and interpret:
        raise KernelError("TRITON_INTERPRET=1 is set: Triton's interpreter would run the kernels on copies in host "
                          "memory; unset it to run them on the GPU")
    if device.type not in ("cpu", "cuda"):
        raise KernelError(f"MODELZOOS_KERNELS=fused needs a CUDA device, got {device}; use MODELZOOS_KERNELS=torch")
    try:
        module = importlib.import_module("modelzoos.kernels.cnn_step")
    except ImportError as err:
        raise KernelError(f"MODELZOOS_KERNELS=fused needs Triton ({err}); it ships with torch's CUDA wheels "
                          "(pip install triton), or use MODELZOOS_KERNELS=torch") from err
    return importlib.reload(module) if interpret != module.INTERPRETED else module


class FusedStep:
    """A group's training step as one launch of ``train_step_kernel`` (a ``population.KernelStep``).

    The kernel updates the group's parameter and optimizer-state tensors in place, found through their
    addresses (taken here: the tensors must stay the same objects, as the engine keeps them). Holds the
    scratch for batches of up to ``batch_size``. ``store_grads``: keep each step's gradients in
    ``grads`` (name → [M, *shape], like ``p.grad``); ``logits`` [M, batch_size, classes] holds the last
    step's logits (rows < b). The returned losses and counts are buffers overwritten by the next step.
    """

    def __init__(self, g: Group, net: PopulationCNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 store_grads: bool = False, block_rows: int = BLOCK_ROWS, block_k: int = BLOCK_K,
                 num_warps: int = NUM_WARPS, max_registers: int | None = None) -> None:
        dev = images.device
        self.kernel = kernel_module(dev).train_step_kernel
        self.g, self.images, self.labels = g, images.contiguous(), labels.contiguous()
        config = g.configs[0]
        classes = g.params[f"{net.specs[-1].name}.weight"].shape[1]
        self.plan = plan(net.specs, images.shape[1], images.shape[-1], classes, batch_size, config.activation,
                         config.optimizer, g.dropout is not None, bool(numerics(dev)["tf32"]), block_rows, block_k)
        self.launch = {"num_warps": num_warps, "num_stages": NUM_STAGES}
        if max_registers is not None:  # per thread (ptxas spills above): more programs per multiprocessor
            self.launch["maxnreg"] = max_registers
        self.adam = config.optimizer == "adam"
        m = g.m
        self.scratch = torch.empty(m, self.plan.scratch, device=dev)
        self.argmax = torch.empty(m, self.plan.argmax, dtype=torch.int8, device=dev)
        self.losses = torch.empty(m, device=dev)
        self.correct = torch.empty(m, dtype=torch.int64, device=dev)
        self.logits = torch.empty(m, batch_size, classes, device=dev)
        self.lr = torch.empty_like(g.lr)  # Adam: lr / (1 − β₁ᵗ), set per step
        self.bc2 = torch.ones((), device=dev)  # Adam: √(1 − β₂ᵗ)
        names = [f"{s.name}.{kind}" for s in net.specs for kind in ("weight", "bias")]
        params = [g.params[k].detach() for k in names]
        self.grads = {k: torch.zeros_like(params[i]) for i, k in enumerate(names)} if store_grads else {}
        self.store_grads = store_grads
        slots = OPTIMIZERS[config.optimizer].slots
        # cnn_step reads two state blocks: an optimizer with one slot (SGD's momentum) gives it for both
        state = [g.opt_state[f"{k}.{slot}"] for slot in (slots * 2)[:2] for k in names]
        # cnn_step's address table: parameters, gradients (unused without store_grads), first and second state
        tensors = [*params, *(self.grads.values() if store_grads else params), *state]
        if not all(t.is_contiguous() and t.dtype == torch.float32 for t in tensors):
            raise KernelError("the fused kernels need contiguous float32 parameters and optimizer state")
        self.tensors = torch.tensor([t.data_ptr() for t in tensors], dtype=torch.int64, device=dev)

    def __call__(self, idx: torch.Tensor, keys: torch.Tensor, done: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on batch ``idx`` [M, b] with the epoch's keys int64 [M] after ``done`` optimizer steps."""
        g = self.g
        if self.adam:
            bc1, bc2 = adam_corrections(done + 1, g.lr.device)
            torch.div(g.lr, bc1, out=self.lr)
            self.bc2.copy_(bc2)
        self.kernel[(g.m,)](
            self.images, self.labels, idx.contiguous(), keys, g.p, self.lr if self.adam else g.lr, g.wd,
            self.bc2, done, self.tensors, self.scratch, self.argmax, self.losses, self.correct, self.logits,
            idx.shape[1], **self.plan.constants, STORE_GRADS=int(self.store_grads), **self.launch)
        return self.losses, self.correct


def fused_step(g: Group, net: PopulationCNN, images: torch.Tensor, labels: torch.Tensor,
               batch_size: int) -> KernelStep:
    """``population.KERNEL_STEPS["fused"]``: the group's step through ``FusedStep``."""
    return FusedStep(g, net, images, labels, batch_size)
