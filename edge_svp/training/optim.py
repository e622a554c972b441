"""Optimizers and learning-rate schedules, per block, and the optimizer's memory levers."""

from __future__ import annotations

import contextlib
import dataclasses
import math

import torch

from edge_svp.config import PLANNED_STATE_PRECISIONS, OptimConfig
from edge_svp.errors import EdgeSVPError


@dataclasses.dataclass(frozen=True)
class OptimizerLevers:
    """How an optimizer holds its memory, as the memory plan chose it (or the configuration
    fixed it): Adam's state in fp32, bf16 or fp8, whether each parameter steps inside
    backward (gradients never all alive; micro-batch = batch), and whether the state lives in
    host RAM, stepped on the CPU (a GPU with memory of its own)."""

    state_precision: str = "fp32"
    step_in_backward: bool = False
    state_on_host: bool = False


DEFAULT_LEVERS = OptimizerLevers()
HOST_STATE = OptimizerLevers(state_on_host=True)


def lever_options(
    cfg: OptimConfig, budgeted: bool, precision: str, discrete_gpu: bool = False
) -> list[OptimizerLevers]:
    """The levers a plan may choose from, in the order it prefers them (cheapest in time and
    accuracy first): what the configuration fixes, and under a budget every "auto" lever (of
    the state precisions, fp32 and bf16; the state in host RAM last, and only when training
    on a `discrete_gpu`). Without a budget an "auto" lever stays off."""
    if cfg.state_on_host == "on":
        return [HOST_STATE]
    adam = cfg.name != "sgd"
    if cfg.state_precision != "auto":
        states = [cfg.state_precision]
    else:
        planned = budgeted and adam and torchao_installed()
        states = list(PLANNED_STATE_PRECISIONS) if planned else ["fp32"]
    if cfg.step_in_backward != "auto":
        in_backward = [cfg.step_in_backward == "on"]
    else:  # fp16's gradient scaler needs every gradient before any parameter steps
        in_backward = [False, True] if budgeted and precision != "fp16" else [False]
    options = [OptimizerLevers(state, sib) for state in states for sib in in_backward]
    host = cfg.state_on_host == "auto" and budgeted and discrete_gpu and torchao_installed()
    if host and "fp32" in states and False in in_backward and precision != "fp16":
        options.append(HOST_STATE)  # the slowest: a CPU step and two copies per parameter
    return options


def levers_of(cfg: OptimConfig, plan) -> OptimizerLevers:
    """The levers training uses: its plan's, else what the configuration fixes ("auto": off)."""
    if plan is not None:
        return OptimizerLevers(plan.state_precision, plan.step_in_backward, plan.state_on_host)
    state = "fp32" if cfg.state_precision == "auto" else cfg.state_precision
    return OptimizerLevers(state, cfg.step_in_backward == "on", cfg.state_on_host == "on")


def check_state_on_host(cfg: OptimConfig, device_type: str, unified: bool) -> None:
    """optim.state_on_host = on saves memory only on a GPU with memory of its own: refused in
    one line on a CPU and on a GPU that shares the host's RAM (a Jetson)."""
    if cfg.state_on_host != "on":
        return
    if device_type != "cuda":
        where = "this run trains on the CPU, whose memory host RAM already is"
    elif unified:
        where = "this GPU shares the host's RAM (unified memory): there is no GPU memory to save"
    elif not torchao_installed():
        where = "it needs torchao (pip install 'edge-svp[lowbit]')"
    else:
        return
    raise EdgeSVPError(f"optim.state_on_host = on keeps the optimizer's state in host RAM; {where}")


def make_optimizer(
    params, cfg: OptimConfig, levers: OptimizerLevers = DEFAULT_LEVERS
) -> torch.optim.Optimizer:
    """The optimizer `cfg` names, fused where this torch has a fused kernel for the device:
    one pass over each parameter instead of a dozen element-wise ones (Adam on a CPU: 9 ms a
    step for 3 M parameters, against 52 ms). Adam's state in bf16 or fp8: training/
    low_precision_state.py. The state in host RAM: torchao's CPUOffloadOptimizer, which keeps
    a pinned host copy of each parameter, copies its gradient over in backward, steps on
    the CPU (fused) and copies the parameter back."""
    params = list(params)
    if levers.state_precision != "fp32":
        from edge_svp.training.low_precision_state import low_precision_adam

        return low_precision_adam(params, cfg, levers.state_precision)
    if cfg.name == "sgd":
        cls, options = torch.optim.SGD, {"momentum": cfg.momentum}
    else:
        cls, options = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam, {}
    options.update(lr=cfg.lr, weight_decay=cfg.weight_decay)
    if levers.state_on_host:
        from torchao.optim import CPUOffloadOptimizer

        return CPUOffloadOptimizer(params, cls, fused=True, **options)
    try:
        return cls(params, fused=True, **options)
    except (RuntimeError, TypeError):  # no fused kernel for these parameters' device here
        return cls(params, **options)


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


def torchao_installed() -> bool:
    """Is torchao here, whose optimizers keep Adam's state in bf16 or fp8, or in host RAM?"""
    import importlib.util

    return importlib.util.find_spec("torchao") is not None
