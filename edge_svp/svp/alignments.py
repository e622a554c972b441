"""Alignment terms A(v, v_ref) between a block's projection and its detached reference.

An alignment is `fn(v, v_ref) -> scalar`, averaged over the batch.
"""

import torch
import torch.nn.functional as F


def cosine(v: torch.Tensor, v_ref: torch.Tensor) -> torch.Tensor:
    """1 - cos(v, v_ref): 0 when aligned, 2 when opposite."""
    return (1.0 - F.cosine_similarity(v, v_ref, dim=-1, eps=1e-8)).mean()


def mse(v: torch.Tensor, v_ref: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over batch and projection dimensions."""
    return (v - v_ref).pow(2).mean()


def none(v: torch.Tensor, v_ref: torch.Tensor) -> torch.Tensor:
    return v.new_zeros(())


ALIGNMENTS = {"cosine": cosine, "mse": mse, "none": none}
