"""A subsampled randomized Hadamard transform as SVP's fixed projection R_l.

    v = (H D z)[S] / sqrt(d0)

z is padded with zeros to n, a power of two; D flips the sign of each of its n entries at
random; H is the n x n Walsh-Hadamard matrix (entries +-1), applied by the fast transform in
n log2 n additions instead of a d0 x n matrix product; S keeps d0 of the results, drawn without
repeats (with d0 > n, several independent sign patterns are stacked first). Every entry of
the equivalent matrix is +-1/sqrt(d0), so E ||v||^2 = ||z||^2, as with the Gaussian R_l, and
the transform preserves pairwise distances in the same Johnson-Lindenstrauss sense. Only D
and S are kept: n signs and d0 indices, drawn from the seed.
"""

import math

import torch
from torch import nn


def walsh_hadamard(x: torch.Tensor) -> torch.Tensor:
    """H x along the last dimension (a power of two), unnormalised: log2 n butterfly stages."""
    *lead, n = x.shape
    half = 1
    while half < n:
        pairs = x.reshape(*lead, n // (2 * half), 2, half)
        a, b = pairs[..., 0, :], pairs[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(*lead, n)
        half *= 2
    return x


class HadamardProjection(nn.Module):
    """v = (H D z)[S] / sqrt(out_dim), for z of width in_dim; D and S are buffers drawn from
    `seed`, never trained."""

    def __init__(self, in_dim: int, out_dim: int, seed: int):
        super().__init__()
        self.in_dim, self.out_dim, self.seed = in_dim, out_dim, seed
        self.width = 1 << max(in_dim - 1, 0).bit_length()  # n: in_dim rounded up to 2^k
        stacks = math.ceil(out_dim / self.width)
        generator = torch.Generator().manual_seed(seed)
        signs = torch.randint(0, 2, (stacks, self.width), generator=generator) * 2 - 1
        self.register_buffer("signs", signs.float())
        rows = torch.randperm(stacks * self.width, generator=generator)[:out_dim]
        self.register_buffer("rows", rows.sort().values)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = nn.functional.pad(z, (0, self.width - self.in_dim))
        mixed = walsh_hadamard(z.unsqueeze(-2) * self.signs).flatten(-2)
        return mixed.index_select(-1, self.rows) / math.sqrt(self.out_dim)

    def dense(self) -> torch.Tensor:
        """The (out_dim, in_dim) matrix this transform multiplies by (for ONNX export)."""
        return self(torch.eye(self.in_dim, dtype=self.signs.dtype)).t().contiguous()

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, seed={self.seed}"
