"""Hand-made weight features: per-layer statistics s(W) and the raw weights W (docs/baselines.md, "Baselines").

``layer_statistics`` is Model Zoos' ``LayerQuintiles`` with ``use_bias=True`` (docs/baselines.md: the MZD
variant, *not* Unterthiner's min/max/std nor R21's kernel-only 35): for every parameter tensor in layout
order (per layer its weight, then its bias) the mean, the variance (population, ddof 0), and the 1st, 25th,
50th, 75th and 99th percentiles (numpy's linear interpolation) → 7 × 10 = **70 features** for the 5-layer
CNNs. ResNet-18 gets 7 per parameter tensor (BatchNorm weight and bias included, running statistics not).
No standardisation: the probes see the raw statistics, as in the protocol.
"""

from __future__ import annotations

import numpy as np
import torch

from modelzoos.architectures import Entry, Layout

QUANTILES = (1, 25, 50, 75, 99)
STATISTICS = ("mean", "var", *(f"p{q}" for q in QUANTILES))


def stat_entries(layout: Layout) -> list[Entry]:
    """The tensors described by ``layer_statistics``: every parameter (not buffer), in layout order."""
    return [e for e in layout.entries if e.kind == "parameter"]


def stat_names(layout: Layout) -> list[str]:
    """Feature names of ``layer_statistics``, e.g. ``conv1.weight.mean``, ``conv1.bias.p99``."""
    return [f"{e.name}.{s}" for e in stat_entries(layout) for s in STATISTICS]


def layer_statistics(weights: np.ndarray | torch.Tensor, layout: Layout) -> np.ndarray:
    """Flat weights [B, D] (or [D]) → float64 [B, 7 · tensors] (or [7 · tensors]); 70 columns for CNN-s."""
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().cpu().numpy()
    single = weights.ndim == 1
    w = np.asarray(weights, dtype=np.float64).reshape(-1, weights.shape[-1])
    if w.shape[1] != layout.size:
        raise ValueError(f"weight vectors have length {w.shape[1]}, the layout has D = {layout.size}")
    columns = []
    for entry in stat_entries(layout):
        part = w[:, entry.offset : entry.offset + entry.numel]
        columns += [part.mean(1), part.var(1), *np.percentile(part, QUANTILES, axis=1)]
    out = np.stack(columns, axis=1)
    return out[0] if single else out


def raw_weights(weights: np.ndarray | torch.Tensor) -> np.ndarray:
    """The flat weight vector itself (biases included, layout order), float32 [B, D]."""
    if isinstance(weights, torch.Tensor):
        return weights.detach().cpu().numpy().astype(np.float32, copy=False)
    return np.asarray(weights, dtype=np.float32)
