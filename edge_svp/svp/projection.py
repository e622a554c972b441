"""The fixed random projection R_l of SVP: a dense Gaussian matrix, or a structured transform
with the same distance-preserving guarantee at a fraction of the arithmetic
(svp.projection; each kind is a module with forward(z) and dense(), the matrix it applies)."""

import torch
from torch import nn

from edge_svp.svp.hadamard import HadamardProjection


class RandomProjection(nn.Module):
    """v = R z with R of shape (out_dim, in_dim), entries N(0, 1/out_dim), never trained.

    R is a buffer, not a parameter: it is saved in the state dict (so a checkpoint
    reproduces it exactly) but no optimizer ever sees it. It is drawn from its own seeded
    generator, so the same seed gives the same R on every machine and run.
    """

    def __init__(self, in_dim: int, out_dim: int, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(out_dim, in_dim, generator=generator) / out_dim**0.5
        self.register_buffer("weight", weight)
        self.seed = seed

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight.t()

    def dense(self) -> torch.Tensor:
        return self.weight

    def extra_repr(self) -> str:
        out_dim, in_dim = self.weight.shape
        return f"in_dim={in_dim}, out_dim={out_dim}, seed={self.seed}"


PROJECTIONS = {"gaussian": RandomProjection, "hadamard": HadamardProjection}


def make_projection(kind: str, in_dim: int, out_dim: int, seed: int) -> nn.Module:
    """R_l of `kind` (svp.projection), mapping in_dim features to out_dim, drawn from `seed`."""
    return PROJECTIONS[kind](in_dim, out_dim, seed)
