"""The fixed random projection R_l of SVP: a dense Gaussian matrix, or a structured transform
with the same distance-preserving guarantee at a fraction of the arithmetic
(svp.projection; each kind is a module with forward(z) and dense(), the matrix it applies)."""

import torch
from torch import nn

from edge_svp.svp.hadamard import HadamardProjection

# Rows of R drawn at a time when it is regenerated: a multiple of 16, so that the chunks'
# draws are, bit for bit, the rows of one draw of R (torch's CPU normal sampler transforms its
# uniforms 16 at a time); about 256 KiB of R at once.
CHUNK_BYTES = 256 * 1024


class RandomProjection(nn.Module):
    """v = R z with R of shape (out_dim, in_dim), entries N(0, 1/out_dim), never trained.

    R is drawn on the CPU from its own seeded generator, so the same seed gives the same R on
    every machine and run. Stored, R is a buffer, not a parameter (saved in the state dict,
    seen by no optimizer). Otherwise R is never held: every use draws it again from the seed,
    a few rows at a time, and multiplies by each chunk in turn: the same R bit for bit and
    the same v up to float32 rounding (a BLAS may multiply by a chunk with another kernel
    than by R whole), for d0 x in_dim normal draws per use instead of 4 d0 in_dim bytes held.

    `stored` is svp.store_projection: true, false, or "auto": held unless the memory planner
    lets it go for a budget (`adjustable`; keep() switches, training/probe_plan.py decides).
    """

    def __init__(self, in_dim: int, out_dim: int, seed: int, stored: bool | str = True):
        super().__init__()
        self.in_dim, self.out_dim, self.seed = in_dim, out_dim, seed
        self.adjustable = stored == "auto"
        self.stored = False
        self.keep(stored is not False)

    def keep(self, stored: bool) -> None:
        """Hold R (drawn now, on the CPU: call it before the module moves to its device) or
        let it go; v is the same either way."""
        if stored and not self.stored:
            generator = torch.Generator().manual_seed(self.seed)
            self.register_buffer("weight", self._draw(generator, self.out_dim))
        elif not stored and self.stored:
            del self.weight
        self.stored = stored

    def _draw(self, generator: torch.Generator, rows: int) -> torch.Tensor:
        return torch.randn(rows, self.in_dim, generator=generator) / self.out_dim**0.5

    def chunks(self):
        """(first row, rows of R) in order, drawn from the seed."""
        generator = torch.Generator().manual_seed(self.seed)
        step = max(16, CHUNK_BYTES // (4 * self.in_dim) // 16 * 16)
        for start in range(0, self.out_dim, step):
            yield start, self._draw(generator, min(step, self.out_dim - start))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.stored:
            return z @ self.weight.t()
        return _Regenerated.apply(z, self)

    def dense(self) -> torch.Tensor:
        """R itself (the ONNX export's initializer)."""
        if self.stored:
            return self.weight
        return torch.cat([rows for _, rows in self.chunks()])

    def extra_repr(self) -> str:
        stored = "" if self.stored else ", regenerated"
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, seed={self.seed}{stored}"


class _Regenerated(torch.autograd.Function):
    """z @ R^T with R drawn chunk by chunk, in the backward pass too (grad z = grad v @ R):
    autograd would otherwise keep every chunk for the backward pass, which is R whole."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, projection: RandomProjection) -> torch.Tensor:
        ctx.projection = projection
        out = z.new_empty(*z.shape[:-1], projection.out_dim)
        for start, rows in projection.chunks():
            out[..., start : start + len(rows)] = z @ rows.to(z.device, z.dtype).t()
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad = None
        for start, rows in ctx.projection.chunks():
            part = grad_out[..., start : start + len(rows)] @ rows.to(
                grad_out.device, grad_out.dtype
            )
            grad = part if grad is None else grad + part
        return grad, None


PROJECTIONS = {"gaussian": RandomProjection, "hadamard": HadamardProjection}


def make_projection(kind: str, in_dim: int, out_dim: int, seed: int, stored: bool | str = True):
    """R_l of `kind` (svp.projection), mapping in_dim features to out_dim, drawn from `seed`;
    a Gaussian R_l not `stored` (svp.store_projection) is drawn again at every use (a
    Hadamard one holds only a few signs and indices either way)."""
    if kind == "gaussian":
        return RandomProjection(in_dim, out_dim, seed, stored)
    return PROJECTIONS[kind](in_dim, out_dim, seed)
