"""The SVP learning rule: fixed random projections and the local objective of each block.

Every piece is pluggable: a new divergence, alignment, head or projection is one function
or module plus one registry entry.
"""

from edge_svp.svp.alignments import ALIGNMENTS
from edge_svp.svp.divergences import DIVERGENCES
from edge_svp.svp.heads import HEADS
from edge_svp.svp.objective import LocalObjective, LocalOutput
from edge_svp.svp.pooling import pool, pooled_dim
from edge_svp.svp.projection import PROJECTIONS, RandomProjection, make_projection

__all__ = [
    "ALIGNMENTS",
    "DIVERGENCES",
    "HEADS",
    "LocalObjective",
    "LocalOutput",
    "PROJECTIONS",
    "RandomProjection",
    "make_projection",
    "pool",
    "pooled_dim",
]
