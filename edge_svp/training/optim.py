"""Optimizers and learning-rate schedules, per block."""

from __future__ import annotations

import dataclasses
import math

import torch

from edge_svp.config import OptimConfig


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg` names, fused where this torch has a fused kernel for the device:
    one pass over each parameter instead of a dozen element-wise ones (Adam on a CPU: 9 ms a
    step for 3 M parameters, against 52 ms)."""
    params = list(params)
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
