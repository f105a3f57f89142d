"""Triton kernels for the population engine (``MODELZOOS_KERNELS=fused``, docs/protocol.md, "Numerics").

``cnn_step``: the kernel of one whole training step of a group of CNN-s / CNN-m models, one program per
model; ``fused``: its driver, the engine's step factory ``fused_step``. Importing this package needs no
Triton; using the kernels does.
"""

from modelzoos.kernels.fused import FusedStep, KernelError, fused_step, plan

__all__ = ["FusedStep", "KernelError", "fused_step", "plan"]
