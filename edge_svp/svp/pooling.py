"""pool(h): the fixed reduction of a block output before its random projection.

Dispatch is by shape, so the same rule serves inputs and every block kind:
  (B, D)        MLP features      -> unchanged
  (B, N, D)     transformer tokens -> svp.token_pool: the mean over tokens, or the first
  (B, C, H, W)  conv feature maps  -> adaptive average pool to s x s, flattened
"""

import torch
import torch.nn.functional as F

from edge_svp.registry import piece


def pool(h: torch.Tensor, size: int = 2, token_pool: str = "mean") -> torch.Tensor:
    if h.dim() == 2:
        return h
    if h.dim() == 3:
        return piece("token_pool", token_pool).pool(h)  # edge_svp/svp/token_pools
    if h.dim() == 4:
        return F.adaptive_avg_pool2d(h, size).flatten(1)
    raise ValueError(f"cannot pool a tensor of shape {tuple(h.shape)}")


def pooled_dim(shape: tuple[int, ...], size: int = 2) -> int:
    """Width of pool(h) for one example of shape `shape` (no batch axis)."""
    if len(shape) == 1:
        return shape[0]
    if len(shape) == 2:
        return shape[1]
    if len(shape) == 3:
        return shape[0] * size * size
    raise ValueError(f"cannot pool a tensor of shape {shape}")
