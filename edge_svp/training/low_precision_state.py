"""Adam with its two moments held in bf16 or fp8 instead of fp32: a half or a quarter of the
optimizer's memory, for a step computed in fp32 all the same.

Both are torchao's low-bit Adam (`pip install 'edge-svp[lowbit]'`): fp8 is its AdamFp8 /
AdamWFp8 (float8 e4m3, one scale per block of 256 values); bf16 is its Adam on plain bf16
buffers. Only the step is driven differently. torchao compiles each parameter's step with
torch.compile, which fuses its fp32 temporaries away; on a CPU that compile took 4-46 s per
parameter shape, in the middle of a run whose memory a budget counts. Run eagerly instead,
the step holds about six fp32 copies of the parameter at once: for a 1000 x 1000 layer, more
than the state it saves. So the same step function (torchao's `single_param_adam`) runs
eagerly here, over pieces of CHUNK values of each parameter and its state.
"""

from __future__ import annotations

import logging
import math

import torch

from edge_svp.config import OptimConfig
from edge_svp.errors import EdgeSVPError

CHUNK = 2**16  # values of a parameter stepped at once: its fp32 temporaries are 256 KiB each
FP8_BLOCK = 256  # values per fp8 scale, as torchao's default
SMALLEST_FP8_BLOCK = 32  # a 4-byte scale per 32 values: an eighth more state
SMALLEST_FP8 = 4096  # parameters smaller than this keep fp32 state, as in torchao


def low_precision_adam(params, cfg: OptimConfig, state_precision: str) -> torch.optim.Optimizer:
    """Adam (or AdamW) over `params` with its state in `state_precision` (bf16 | fp8)."""
    if cfg.name == "sgd":
        raise EdgeSVPError(f"{state_precision} optimizer state is for Adam; SGD keeps fp32")
    adam = _torchao_adam()
    if state_precision == "fp8":
        base = _fp8_state(adam, adam.AdamWFp8 if cfg.name == "adamw" else adam.AdamFp8)
        return _chunked(adam, base)(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return _chunked(adam, _bf16_state(adam))(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, is_adamw=cfg.name == "adamw"
    )


def _torchao_adam():
    # torchao logs the optional CUDA kernels that a CPU build cannot load, and torch a
    # deprecation of torchao's; neither concerns these optimizers
    quiet = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.ERROR)
    try:
        from torchao.optim import adam
    except ImportError:
        raise EdgeSVPError(
            "optimizer state in bf16 or fp8 needs torchao: pip install 'edge-svp[lowbit]'"
        ) from None
    finally:
        for log, level in zip(quiet, levels, strict=True):
            log.setLevel(level)
    return adam


def _bf16_state(adam):
    """torchao's Adam on plain bf16 moment buffers: its step upcasts them to fp32, updates,
    and writes them back rounded to nearest."""

    class Bf16StateAdam(adam._AdamBase):
        def __init__(self, params, lr, weight_decay, is_adamw):
            super().__init__(params, lr, (0.9, 0.999), 1e-8, weight_decay, False,
                             block_size=0, bf16_stochastic_round=False, is_adamw=is_adamw)  # fmt: skip

        def _new_buffer(self, p: torch.Tensor, signed: bool) -> torch.Tensor:
            return torch.zeros_like(p, dtype=torch.bfloat16)

        def load_state_dict(self, state_dict: dict) -> None:
            super().load_state_dict(state_dict)  # which casts the moments to fp32: back to bf16
            for state in self.state.values():
                for key in ("exp_avg", "exp_avg_sq"):
                    state[key] = state[key].to(torch.bfloat16)

    return Bf16StateAdam


def _fp8_state(adam, base):
    """torchao's fp8-state Adam, with blocks of 256 values where a parameter's size allows,
    else of the largest power of two down to 32 that divides it: torchao keeps the state of
    a parameter whose size 256 does not divide (a 1000 x 1000 layer) in fp32."""

    class Fp8StateAdam(base):
        def _new_buffer(self, p: torch.Tensor, signed: bool) -> torch.Tensor:
            block = math.gcd(p.numel(), FP8_BLOCK)
            if p.numel() < SMALLEST_FP8 or block < SMALLEST_FP8_BLOCK:
                return torch.zeros_like(p)  # as torchao does: their scales would cost more
            return adam.OptimStateFp8.zeros(p.shape, block, device=p.device)

    return Fp8StateAdam


def _chunked(adam, base):
    """`base` (a torchao Adam) stepping each parameter CHUNK values at a time, eagerly."""
    fp8_state = adam.OptimStateFp8

    def piece(t: torch.Tensor, start: int) -> torch.Tensor:
        """Values start..start+CHUNK of `t` (flattened), as a view that writes through."""
        if isinstance(t, fp8_state):  # its codes, and the scales of their blocks
            first = start // t.block_size
            return fp8_state(piece(t.codes, start), t.scale[first : first + CHUNK // t.block_size])
        return t.view(-1)[start : start + CHUNK]

    class Chunked(base):
        @torch.no_grad()
        def step(self, closure=None):
            if closure is not None:
                raise ValueError("a low-precision-state Adam takes no closure")
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self._step_param(p, group)

        def _step_param(self, p: torch.Tensor, group: dict) -> None:
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = self._new_buffer(p, True)
                state["exp_avg_sq"] = self._new_buffer(p, False)
            state["step"] += 1
            beta1, beta2 = group["betas"]
            tensors = [p.detach(), p.grad, state["exp_avg"], state["exp_avg_sq"]]
            chunked = all(t.is_contiguous() for t in tensors)  # views of pieces write through
            for start in range(0, p.numel(), CHUNK) if chunked else [None]:
                param, grad, exp_avg, exp_avg_sq = (
                    tensors if start is None else [piece(t, start) for t in tensors]
                )
                adam.single_param_adam(param, grad, state["step"], exp_avg, exp_avg_sq, None,
                                       group["lr"], beta1, beta2, group["weight_decay"],
                                       group["eps"], self.is_adamw, False)  # fmt: skip

    Chunked.__name__ = Chunked.__qualname__ = base.__name__
    return Chunked
