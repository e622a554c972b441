"""Mixed precision, per block: autocast around each block's forward pass and local loss and,
for fp16, a gradient scaler per block (so an overflow skips that block's step only).

    with autocast(train.precision, device):     # BlockTrainer.micro_step (training/step.py)
        out = objective(block(x), v_ref, y)
    scaler.scale(out.loss * share).backward()   # scaler = grad_scaler(train.precision, device)
    scaler.step(optimizer); scaler.update()     # BlockTrainer.step

Weights, gradients and optimizer state stay float32; autocast runs matrix products and
convolutions in the lower precision and keeps reductions and losses in float32.
"""

from __future__ import annotations

import contextlib

import torch

from edge_svp.errors import EdgeSVPError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type == "cpu":
        raise EdgeSVPError(
            "fp16 needs CUDA: on a CPU it is emulated, far slower than fp32; "
            "use --precision fp32 or bf16"
        )


def autocast(precision: str, device: torch.device):
    """The autocast context of `precision` on `device` (none for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler for fp16, whose small range would flush small gradients to zero; a
    disabled one (a pass-through) otherwise."""
    check_precision(precision, device)
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
