"""Optimizers and learning-rate schedules, per block, and the optimizer's memory levers."""

from __future__ import annotations

import contextlib
import dataclasses
import math

import torch

from edge_svp.config import PLANNED_STATE_PRECISIONS, OptimConfig


@dataclasses.dataclass(frozen=True)
class OptimizerLevers:
    """How an optimizer holds its memory, as the memory plan chose it (or the configuration
    fixed it): Adam's state in fp32, bf16 or fp8, and whether each parameter steps inside
    backward (gradients never all alive; micro-batch = batch)."""

    state_precision: str = "fp32"
    step_in_backward: bool = False


DEFAULT_LEVERS = OptimizerLevers()


def lever_options(cfg: OptimConfig, budgeted: bool, precision: str) -> list[OptimizerLevers]:
    """The levers a plan may choose from, in the order it prefers them (cheapest in time and
    accuracy first): what the configuration fixes, and under a budget every "auto" lever (of
    the state precisions, fp32 and bf16). Without a budget an "auto" lever stays off."""
    adam = cfg.name != "sgd"
    if cfg.state_precision != "auto":
        states = [cfg.state_precision]
    else:
        planned = budgeted and adam and low_precision_state()
        states = list(PLANNED_STATE_PRECISIONS) if planned else ["fp32"]
    if cfg.step_in_backward != "auto":
        in_backward = [cfg.step_in_backward == "on"]
    else:  # fp16's gradient scaler needs every gradient before any parameter steps
        in_backward = [False, True] if budgeted and precision != "fp16" else [False]
    return [OptimizerLevers(state, sib) for state in states for sib in in_backward]


def levers_of(cfg: OptimConfig, plan) -> OptimizerLevers:
    """The levers training uses: its plan's, else what the configuration fixes ("auto": off)."""
    if plan is not None:
        return OptimizerLevers(plan.state_precision, plan.step_in_backward)
    state = "fp32" if cfg.state_precision == "auto" else cfg.state_precision
    return OptimizerLevers(state, cfg.step_in_backward == "on")


def make_optimizer(
    params, cfg: OptimConfig, state_precision: str = "fp32"
) -> torch.optim.Optimizer:
    """The optimizer `cfg` names, fused where this torch has a fused kernel for the device:
    one pass over each parameter instead of a dozen element-wise ones (Adam on a CPU: 9 ms a
    step for 3 M parameters, against 52 ms). Adam's state in bf16 or fp8: training/
    low_precision_state.py."""
    params = list(params)
    if state_precision != "fp32":
        from edge_svp.training.low_precision_state import low_precision_adam

        return low_precision_adam(params, cfg, state_precision)
    if cfg.name == "sgd":
        cls, options = torch.optim.SGD, {"momentum": cfg.momentum}
    else:
        cls, options = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam, {}
    try:
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True, **options)
    except (RuntimeError, TypeError):  # no fused kernel for these parameters' device here
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **options)


def make_lr_schedule(optimizer, cfg: OptimConfig, total_steps: int, warmup_steps: int = 0):
    """Per-step schedule: cosine decay to zero over `total_steps`, or constant; with
    `warmup_steps`, a linear rise from zero over the first of them."""

    def factor(step: int) -> float:
        warmup = min((step + 1) / warmup_steps, 1.0) if warmup_steps else 1.0
        if cfg.lr_schedule == "constant":
            return warmup
        return warmup * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def block_optim(cfg: OptimConfig, index: int) -> OptimConfig:
    """The optimizer settings of block `index` (0-based): lr times its optim.block_lr."""
    if not cfg.block_lr:
        return cfg
    return dataclasses.replace(cfg, lr=cfg.lr * cfg.block_lr[min(index, len(cfg.block_lr) - 1)])


@contextlib.contextmanager
def stepping_in_backward(optimizer: torch.optim.Optimizer, params):
    """Within: each of `params` steps `optimizer` the moment backward has accumulated its
    gradient, and drops that gradient (the recipe of torch's "optimizer step in backward"
    tutorial, with one optimizer: a step skips every parameter without a gradient, and only
    this one has one). A gradient that is NaN or inf is dropped without a step; the context
    yields the list such parameters are added to."""
    skipped = []

    def step_now(p: torch.Tensor) -> None:
        # a sum is NaN or inf if any of its terms is, and needs no gradient-sized temporaries,
        # which isfinite(grad).all() does on a CPU
        if torch.isfinite(p.grad.sum()):
            optimizer.step()
        else:
            skipped.append(p)
        p.grad = None

    handles = [p.register_post_accumulate_grad_hook(step_now) for p in params]
    try:
        yield skipped
    finally:
        for handle in handles:
            handle.remove()


def low_precision_state() -> bool:
    """Can Adam's state be kept in bf16 or fp8 here (torchao installed)?"""
    import importlib.util

    return importlib.util.find_spec("torchao") is not None
