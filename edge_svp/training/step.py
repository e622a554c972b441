"""One block in training: the one function that trains it on a micro-batch, and the one
place its optimizer steps.

    trainer = BlockTrainer(2, (net.blocks[1], net.objectives[1], params), StepSettings(optim, steps))
    h, out = trainer.micro_step(x, v_ref, y, share)   # every micro-batch: forward, backward
    step_blocks([trainer], skip_bad, fault)           # every batch: optimizer, LR schedule

The joint and layerwise schedules, the backprop baseline (one "block": the whole network and
its classifier) and the pipeline's stages all train through these. The ONNX Runtime
counterpart is edge_svp/ort/runtime.py's BlockSession.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from edge_svp.config import OptimConfig
from edge_svp.svp import LocalOutput
from edge_svp.training.optim import (
    OptimizerLevers,
    make_lr_schedule,
    make_optimizer,
    stepping_in_backward,
)
from edge_svp.training.precision import autocast, grad_scaler


class BatchStats:
    """Running mean loss and accuracy over one epoch. A micro-batch whose loss is NaN or inf
    is left out and flagged (`nonfinite`) for step_blocks (training/step.py) to act on."""

    def __init__(self):
        self.loss = 0.0
        self.correct = 0
        self.count = 0
        self.nonfinite = False

    def update(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        n = len(y)
        loss = float(loss.detach())
        if not math.isfinite(loss):
            self.nonfinite = True
            return
        self.loss += loss * n
        self.correct += int((logits.argmax(-1) == y).sum())
        self.count += n

    def state(self) -> dict:
        return {"loss": self.loss, "correct": self.correct, "count": self.count}

    def load(self, state: dict) -> None:
        self.loss, self.correct, self.count = state["loss"], state["correct"], state["count"]

    def record(self, **extra) -> dict:
        return {
            **extra,
            "loss": self.loss / max(self.count, 1),
            "train_accuracy": self.correct / max(self.count, 1),
        }


@dataclass
class StepSettings:
    """How a BlockTrainer steps: its optimizer and learning-rate schedule over `total_steps`
    (rising over the first `warmup_steps`), in what precision, on what device, with what
    memory levers."""

    optim: OptimConfig
    total_steps: int
    precision: str = "fp32"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    warmup_steps: int = 0
    levers: OptimizerLevers = field(default_factory=OptimizerLevers)


class BlockTrainer:
    """A block, its local objective, its optimizer with LR schedule and gradient scaler
    (fp16), and the running statistics of the epoch in progress.

    `trained` is (module, objective, parameters): a block, its local objective and what the
    step trains (backprop_step gives the whole network's)."""

    def __init__(self, number: int, trained: tuple, settings: StepSettings):
        self.number = number  # 1-based, as messages and metrics count blocks
        self.module, self.objective, params = trained
        self.params = list(params)
        optim, precision, device = settings.optim, settings.precision, settings.device
        self.optimizer = make_optimizer(self.params, optim, settings.levers)
        self.step_in_backward = settings.levers.step_in_backward
        self.nonfinite_gradients = False  # stepping in backward: a gradient was NaN or inf
        self.schedule = make_lr_schedule(self.optimizer, optim, settings.total_steps,
                                         settings.warmup_steps)  # fmt: skip
        self.total_steps = settings.total_steps
        self.scaler = grad_scaler(precision, device)
        self.precision, self.device = precision, device
        self.stats = BatchStats()

    @property
    def done(self) -> bool:
        """Has the block taken every step of its schedule? (SVP joint with train.block_epochs:
        it then runs frozen while deeper blocks train on.)"""
        return self.schedule.last_epoch >= self.total_steps

    def micro_step(self, x, v_ref, y, share: float) -> tuple[torch.Tensor, LocalOutput]:
        """Forward under autocast, the local loss, and its backward, weighted by the
        micro-batch's share of its batch (gradients accumulate until `step`). A loss that is
        NaN or inf is left out of the statistics and flagged for step_blocks. A block that is
        `done` runs its forward and loss without gradients, for the blocks after it and its
        statistics.

        Stepping in backward, the optimizer steps during backward (one micro-batch per batch),
        which a NaN or inf loss skips."""
        if self.done:
            with torch.no_grad(), autocast(self.precision, self.device):
                h = self.module(x)
                out = self.objective(h, v_ref, y)
            self.stats.update(out.loss, out.logits, y)
            return h, out
        with autocast(self.precision, self.device):
            # detach: the block boundary; no gradient reaches the previous block
            h = self.module(x.detach())
            out = self.objective(h, v_ref, y)
        self.stats.update(out.loss, out.logits, y)
        if not self.step_in_backward:
            self.scaler.scale(out.loss * share).backward()
        elif share != 1:
            raise ValueError("stepping in backward needs one micro-batch per batch")
        elif not self.stats.nonfinite:
            with stepping_in_backward(self.optimizer, self.params) as skipped:
                out.loss.backward()
            self.nonfinite_gradients = bool(skipped)
        return h, out

    def gradient_sum(self) -> torch.Tensor:
        """The sum of every gradient: NaN or inf if any gradient is. fp16 gradients are
        scaled and overflow by design now and then; their scaler skips such a step and
        lowers its scale, so they count as finite here."""
        if self.nonfinite_gradients:  # stepped in backward, where the gradients are gone
            return self.params[0].new_tensor(float("nan"))
        grads = [p.grad.sum() for p in self.params if p.grad is not None]
        if not grads or self.scaler.is_enabled():
            return self.params[0].new_zeros(())
        return torch.stack(grads).sum()

    def step(self, skip: bool = False) -> None:
        """End of a batch: step the optimizer (through the scaler) unless `skip`, advance the
        LR schedule, and clear the gradients. A block that is `done` stays as it is."""
        if self.done:
            return
        if not skip and not self.step_in_backward:  # stepping in backward: stepped already
            self.scaler.step(self.optimizer)  # fp16: skipped if its gradients overflowed
            self.scaler.update()
        with warnings.catch_warnings():
            # a skipped step (fp16 overflow, bad batch) leaves torch thinking the order is wrong
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_gradients = False

    @property
    def lr(self) -> float:
        return float(self.schedule.get_last_lr()[0])  # a tensor for torchao's optimizers

    def new_epoch(self) -> BatchStats:
        self.stats = BatchStats()
        return self.stats

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state["scaler"]:  # a disabled scaler saves an empty state
            self.scaler.load_state_dict(state["scaler"])


def first_nonfinite(trainers: list[BlockTrainer]) -> tuple[int, str] | None:
    """(block, 'loss' or 'gradients') of the first block whose batch went NaN or inf."""
    for trainer in trainers:
        if trainer.stats.nonfinite:
            return trainer.number, "loss"
    # one sum per block, one synchronisation in all
    finite = torch.isfinite(torch.stack([t.gradient_sum() for t in trainers])).tolist()
    bad = [t.number for t, ok in zip(trainers, finite, strict=True) if not ok]
    return (bad[0], "gradients") if bad else None


def step_blocks(
    trainers: list[BlockTrainer], skip_bad: bool, fault: Callable[[int, str], Exception]
) -> bool:
    """End of a batch for `trainers`: step them all, or, if a loss or gradient went NaN or
    inf, skip the batch (`skip_bad`) or raise fault(block, what). Returns False if skipped."""
    bad = first_nonfinite(trainers)
    for trainer in trainers:
        trainer.stats.nonfinite = False
    if bad and not skip_bad:
        raise fault(*bad)
    for trainer in trainers:
        trainer.step(skip=bad is not None)
    return bad is None
