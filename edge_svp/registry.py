"""The learning rule's pluggable pieces. Each kind is a package with one module per piece
(edge_svp/svp/divergences/kl.py, ...), so that adding one is adding one file: its torch form
and, where the ONNX Runtime backend can train it, its ONNX form (docs/svp.md, "Adding a
piece"). Names are read off the files without importing them, so that reading a
configuration does not import torch; a piece's module is imported when it is used.

    names("divergence")            # ('bhattacharyya', 'kl', 'none')
    piece("divergence", "kl").loss  # the torch form
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

# the configuration key (svp.KEY) of each kind, and its package
KINDS = {
    "divergence": "edge_svp.svp.divergences",
    "alignment": "edge_svp.svp.alignments",
    "head": "edge_svp.svp.heads",
    "token_pool": "edge_svp.svp.token_pools",
}


def names(kind: str) -> tuple[str, ...]:
    """The pieces of `kind`, by the names of their modules."""
    folder = Path(__file__).parent.joinpath(*KINDS[kind].split(".")[1:])
    return tuple(sorted(m.name for m in pkgutil.iter_modules([str(folder)])))


def piece(kind: str, name: str) -> ModuleType:
    return importlib.import_module(f"{KINDS[kind]}.{name}")


def pieces(kind: str) -> dict[str, ModuleType]:
    return {name: piece(kind, name) for name in names(kind)}
