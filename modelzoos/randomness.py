"""Counter-based randomness: every random draw of training is a pure function of (seed, stream, step, index).

The original zoos drew data order and dropout masks from torch's global RNG, one model per process.
Batched training of many models on a GPU cannot replay that stream, so both engines draw from this
hash instead (documented deviation, docs/format.md): a model's seed still fixes its data order,
dropout masks and augmentations, identically on CPU and GPU and whatever other models share the batch.

The hash is the 32-bit MurmurHash3 finaliser applied in a chain; values are carried in int64 tensors
holding unsigned 32-bit numbers, so it runs on any torch device.
"""

from __future__ import annotations

import torch

# Stream ids: one per kind of draw, so that draws of different kinds never coincide.
DATA_ORDER = 1
DROPOUT = 16  # + layer index
CROP_X, CROP_Y, FLIP, ROTATE = 2, 3, 4, 5
VAL_CROP_X, VAL_CROP_Y, VAL_FLIP = 6, 7, 8

_MASK = 0xFFFFFFFF


def _fmix(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _MASK
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _MASK
    return h ^ (h >> 16)


def _as_long(x: int | torch.Tensor, device: torch.device | None) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.int64, device=device) & _MASK


def random_bits(seed: int | torch.Tensor, stream: int, step: int | torch.Tensor,
                index: torch.Tensor) -> torch.Tensor:
    """Uniform 32-bit integers (int64 tensor in [0, 2³²)) for every ``index``; arguments broadcast.

    ``seed`` may be a tensor of per-model seeds shaped to broadcast against ``index`` (e.g. [M, 1, ...]).
    """
    device = index.device
    h = _fmix(_as_long(seed, device) ^ 0x9E3779B9)
    h = _fmix((h + stream * 0x632BE5AB) & _MASK)
    h = _fmix((h + _as_long(step, device)) & _MASK)
    return _fmix((h + (index.to(torch.int64) & _MASK) * 0x27D4EB2F) & _MASK)


def uniform(seed: int | torch.Tensor, stream: int, step: int | torch.Tensor, index: torch.Tensor,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform floats in [0, 1) with 24 random bits, shaped like the broadcast of the arguments."""
    return (random_bits(seed, stream, step, index) >> 8).to(dtype) * (1.0 / (1 << 24))


def permutation(seed: int | torch.Tensor, stream: int, step: int | torch.Tensor, n: int,
                device: torch.device | str | None = None) -> torch.Tensor:
    """A random permutation of ``range(n)`` (int64 [n], or [M, n] for a tensor of M seeds [M, 1])."""
    keys = random_bits(seed, stream, step, torch.arange(n, device=device))
    return torch.argsort(keys, dim=-1, stable=True)
