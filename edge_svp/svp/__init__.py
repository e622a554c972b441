"""The SVP learning rule: fixed random projections and the local objective of each block.

Every piece is pluggable: a new divergence, alignment or head is one module in its package
(edge_svp/registry.py), a projection one class in PROJECTIONS.
"""

from edge_svp.registry import pieces
from edge_svp.svp.objective import LocalObjective, LocalOutput
from edge_svp.svp.pooling import pool, pooled_dim
from edge_svp.svp.projection import PROJECTIONS, RandomProjection, make_projection

# the torch forms, by name
DIVERGENCES = {name: module.loss for name, module in pieces("divergence").items()}
ALIGNMENTS = {name: module.loss for name, module in pieces("alignment").items()}
HEADS = {name: module.build for name, module in pieces("head").items()}

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
