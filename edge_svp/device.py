"""The training device a configuration names."""

from __future__ import annotations

import torch

from edge_svp.errors import EdgeSVPError


def resolve_device(name: str) -> torch.device:
    """The device `name` (auto | cpu | cuda) means here; CUDA with its index, which the
    allocator's per-device calls need."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise EdgeSVPError("device 'cuda' was asked for, but torch sees no CUDA device")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)
