"""A subsampled randomized Hadamard transform as SVP's fixed projection R_l.

    v = (H D z)[S] / sqrt(d0)

z is padded with zeros to n, a power of two; D flips the sign of each of its n entries at
random; H is the n x n Walsh-Hadamard matrix (entries +-1); S keeps d0 of the results, drawn
without repeats (with d0 > n, several independent sign patterns are stacked first). Every
entry of the equivalent matrix is +-1/sqrt(d0), so E ||v||^2 = ||z||^2, as with the Gaussian
R_l, and the transform preserves pairwise distances in the same Johnson-Lindenstrauss sense.
Only D and S are kept: n signs and d0 indices, drawn from the seed. H is never formed: it is
H_a (x) H_b, two products with small Hadamard matrices (a, b about sqrt(n)) that BLAS runs at
full speed, 2 n (a + b) FLOPs per example against the Gaussian's 2 n d0.
"""

import math

import torch
from torch import nn


def hadamard_matrix(n: int) -> torch.Tensor:
    """The n x n Walsh-Hadamard matrix (n a power of two, entries +-1), Sylvester's order."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h


def factors(n: int) -> tuple[int, int]:
    """n = a * b, both powers of two, a <= b, as near sqrt(n) as they go."""
    a = 1 << (n.bit_length() - 1) // 2
    return a, n // a


def walsh_hadamard(x: torch.Tensor, ha: torch.Tensor, hb: torch.Tensor) -> torch.Tensor:
    """H x along the last dimension, n = a * b, with H_n = H_a (x) H_b: x as an a x b matrix X,
    H_a X H_b, two small matrix products (2 n (a + b) FLOPs per row instead of 2 n^2)."""
    *lead, n = x.shape
    return (ha @ x.reshape(*lead, len(ha), len(hb)) @ hb).reshape(*lead, n)


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
        # H's two factors: rebuilt from the width, so not saved with the state
        for name, size in zip(("ha", "hb"), factors(self.width), strict=True):
            self.register_buffer(name, hadamard_matrix(size), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = nn.functional.pad(z, (0, self.width - self.in_dim))
        mixed = walsh_hadamard(z.unsqueeze(-2) * self.signs, self.ha, self.hb).flatten(-2)
        return mixed.index_select(-1, self.rows) / math.sqrt(self.out_dim)

    def dense(self) -> torch.Tensor:
        """The (out_dim, in_dim) matrix this transform multiplies by (for ONNX export)."""
        return self(torch.eye(self.in_dim, dtype=self.signs.dtype)).t().contiguous()

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, seed={self.seed}"
