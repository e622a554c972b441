"""Mixed precision, per block: autocast around the forward pass and, for fp16, a gradient
scaler. Every block owns its optimizer, schedule and scaler, so an fp16 overflow skips the
step of that block only.

    step = BlockStep(params, optim, total_steps, "bf16", device)
    with step.autocast():
        loss = objective(block(x), v_ref, y).loss
    step.backward(loss * share)   # scaled for fp16
    if last:
        step.step()               # optimizer (unscaled), scaler, lr schedule

Weights, gradients and optimizer state stay float32; autocast runs matrix products and
convolutions in the lower precision and keeps reductions and losses in float32.
"""

from __future__ import annotations

import contextlib

import torch

from edge_svp.config import OptimConfig
from edge_svp.errors import EdgeSVPError
from edge_svp.training.common import make_lr_schedule, make_optimizer

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


class BlockStep:
    """One block's optimizer, learning-rate schedule and gradient scaler."""

    def __init__(self, params, optim: OptimConfig, total_steps: int, precision: str, device):
        check_precision(precision, device)
        self.precision, self.device = precision, device
        self.optimizer = make_optimizer(params, optim)
        self.schedule = make_lr_schedule(self.optimizer, optim, total_steps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self):
        return autocast(self.precision, self.device)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self) -> None:
        self.scaler.step(self.optimizer)  # skipped when fp16 gradients overflowed
        self.scaler.update()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def lr(self) -> float:
        return self.schedule.get_last_lr()[0]
