"""Counter-based randomness: every random draw of training is a pure function of (key, stream, step, index).

The original zoos drew data order, dropout masks and augmentations from torch's global RNG, seeded once per
model before its initialisation. Batched training of many models on a GPU cannot replay that stream, so both
engines draw from this hash instead (documented deviation, docs/protocol.md): a model's key fixes its data
order, dropout masks and augmentations, identically on CPU and GPU and whatever other models share the batch.

Keys follow the original's sharing structure (docs/protocol.md, "Which models share a data order"). Models of
one seed drew the same numbers from the global RNG exactly as long as they had consumed it equally, so a
model's key at an epoch is its seed plus a *lane*, its RNG-consumption class (``model_key``):

- ``INIT_LANE``: ``uniform_`` and ``kaiming_uniform_`` draw one number per weight; ``normal_`` and
  ``kaiming_normal_`` draw more (torch's Box–Muller fill redraws 16 for every tensor whose size is not a
  multiple of 16, true of some layer of every zoo CNN), so U/KU and N/KN models of a seed part at epoch 1;
- ``DROPOUT_LANE``: dropout masks (as many draws for any p > 0, none for p = 0) are drawn after an epoch's
  order, so models with dropout > 0 part from dropout-0 ones at epoch ``DROPOUT_PARTS_AT`` = 2.

A key holds the seed (< 2³²) in its low 32 bits and the lane above; lane 0 keys are the plain seed.
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

# Lanes: init scheme → RNG-consumption class of the init (torch draws per weight: uniform_ one, normal_ more)
INIT_LANE = {"uniform": 0, "kaiming_uniform": 0, "normal": 1, "kaiming_normal": 1}
DROPOUT_LANE = 2  # added for dropout > 0 from epoch DROPOUT_PARTS_AT on
DROPOUT_PARTS_AT = 2  # the first epoch whose order was drawn after dropout masks (epoch 1's)

_MASK = 0xFFFFFFFF


def model_key(seed: int, init: str, dropout: float, epoch: int) -> int:
    """The key of all draws of a model in ``epoch`` (0 = before training): its seed and its lane."""
    if not 0 <= seed <= _MASK:
        raise ValueError(f"seed {seed} is outside [0, 2**32): a model's random draws are keyed by a 32-bit seed")
    if init not in INIT_LANE:
        raise ValueError(f"unknown init {init!r}; valid: {', '.join(sorted(INIT_LANE))}")
    lane = INIT_LANE[init] + (DROPOUT_LANE if dropout > 0 and epoch >= DROPOUT_PARTS_AT else 0)
    return seed + (lane << 32)


def _fmix(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _MASK
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _MASK
    return h ^ (h >> 16)


def _as_long(x: int | torch.Tensor, device: torch.device | None) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.int64, device=device) & _MASK


def stream_mix(stream: int) -> int:
    """The constant a stream adds to a key's hash in ``random_bits`` (the fused kernels take it precomputed)."""
    return (stream * 0x632BE5AB) & _MASK


def random_bits(key: int | torch.Tensor, stream: int, step: int | torch.Tensor,
                index: torch.Tensor) -> torch.Tensor:
    """Uniform 32-bit integers (int64 tensor in [0, 2³²)) for every ``index``; arguments broadcast.

    ``key`` is a seed or a ``model_key``, or a tensor of per-model keys shaped to broadcast against ``index``
    (e.g. [M, 1, ...]).
    """
    device = index.device
    key = torch.as_tensor(key, dtype=torch.int64, device=device)
    h = _fmix((key & _MASK) ^ 0x9E3779B9)
    lane = key >> 32
    h = torch.where(lane == 0, h, _fmix((h + lane * 0x165667B1) & _MASK))
    h = _fmix((h + stream_mix(stream)) & _MASK)
    h = _fmix((h + _as_long(step, device)) & _MASK)
    return _fmix((h + (index.to(torch.int64) & _MASK) * 0x27D4EB2F) & _MASK)


def uniform(key: int | torch.Tensor, stream: int, step: int | torch.Tensor, index: torch.Tensor,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform floats in [0, 1) with 24 random bits, shaped like the broadcast of the arguments."""
    return (random_bits(key, stream, step, index) >> 8).to(dtype) * (1.0 / (1 << 24))


def permutation(key: int | torch.Tensor, stream: int, step: int | torch.Tensor, n: int,
                device: torch.device | str | None = None) -> torch.Tensor:
    """A random permutation of ``range(n)`` (int64 [n], or [M, n] for a tensor of M keys [M, 1])."""
    keys = random_bits(key, stream, step, torch.arange(n, device=device))
    return torch.argsort(keys, dim=-1, stable=True)
