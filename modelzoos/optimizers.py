"""The optimizers of the protocol, one table entry each: torch's for one model, the same math batched over models.

``OPTIMIZERS[name]`` gives ``torch`` (the ``torch.optim`` optimizer the reference engine uses), ``slots`` (the
per-parameter state tensors, under torch's names) and ``step`` (the batched update of the population engine
and the twins). Both forms use coupled L2 weight decay (the gradient gets ``weight_decay · w``) and torch's
defaults (Adam betas (0.9, 0.999), eps 1e-8; SGD momentum 0.9, no dampening, no Nesterov), so the engines
agree to float rounding. A new optimizer is a new entry here, its name in ``catalogue.GRID_NAMES`` (zoo specs
are validated against it without importing torch) and its sentence in ``card.OPTIMIZER_TEXT``.

Batched form: parameters ``params[name]`` float32 [M, *shape] with their gradients in ``.grad``; state
``state[f"{name}.{slot}"]`` [M, *shape]; ``lr``, ``weight_decay`` float32 [M]; ``step`` the optimizer steps
taken including this one (int or device tensor, so the update can be captured in a CUDA graph).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from modelzoos.catalogue import GRID_NAMES, check_registry

BETAS, EPS, MOMENTUM = (0.9, 0.999), 1e-8, 0.9  # torch.optim defaults used by the protocol

Params = dict[str, torch.Tensor]


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-model values [M] viewed to broadcast against [M, *shape]."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def adam_corrections(step: int | torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam's bias corrections (1 − β₁ᵗ, √(1 − β₂ᵗ)) for ``t = step``: computed in float64 on the device (a device
    ``step`` keeps them graph-capturable), returned as float32 scalars."""
    b1, b2 = BETAS
    t = torch.as_tensor(step, dtype=torch.float64, device=device)
    return (1 - torch.pow(b1, t)).float(), torch.sqrt(1 - torch.pow(b2, t)).float()


@torch.no_grad()
def adam_step(params: Params, state: Params, lr: torch.Tensor, weight_decay: torch.Tensor,
              step: int | torch.Tensor) -> None:
    """One Adam step (coupled L2) for every model; ``step`` counts from 1, as torch's state["step"].

    The bias corrections (``adam_corrections``) are used in float32 as torch's Adam uses its Python-float ones.
    """
    b1, b2 = BETAS
    bc1, bc2_sqrt = adam_corrections(step, lr.device)
    lr = lr / bc1
    for name, p in params.items():
        grad = p.grad + _bcast(weight_decay, p) * p
        m_, v_ = state[f"{name}.exp_avg"], state[f"{name}.exp_avg_sq"]
        m_.lerp_(grad, 1 - b1)
        v_.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (v_.sqrt() / bc2_sqrt).add_(EPS)
        p.sub_(_bcast(lr, p) * m_ / denom)
        p.grad = None


@torch.no_grad()
def sgd_step(params: Params, state: Params, lr: torch.Tensor, weight_decay: torch.Tensor,
             step: int | torch.Tensor) -> None:
    """One SGD step, momentum 0.9, no dampening (coupled L2). The buffer starts at zero, so the first step
    sets it to the gradient exactly, as torch's does."""
    for name, p in params.items():
        grad = p.grad + _bcast(weight_decay, p) * p
        buf = state[f"{name}.momentum_buffer"]
        buf.mul_(MOMENTUM).add_(grad)
        p.sub_(_bcast(lr, p) * buf)
        p.grad = None


@dataclass(frozen=True)
class Optimizer:
    """One optimizer of the protocol (module docstring)."""

    torch: Callable[[Iterable[torch.Tensor], float, float], torch.optim.Optimizer]  # (params, lr, weight_decay)
    slots: tuple[str, ...]
    step: Callable[[Params, Params, torch.Tensor, torch.Tensor, int | torch.Tensor], None]


OPTIMIZERS: dict[str, Optimizer] = {
    "adam": Optimizer(lambda params, lr, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
                      ("exp_avg", "exp_avg_sq"), adam_step),
    "sgd": Optimizer(lambda params, lr, wd: torch.optim.SGD(params, lr=lr, momentum=MOMENTUM, weight_decay=wd),
                     ("momentum_buffer",), sgd_step),
}
check_registry("optimizers.OPTIMIZERS", OPTIMIZERS, GRID_NAMES["optimizer"])
