"""One linear layer."""

from torch import nn


def build(proj_dim: int, num_classes: int) -> nn.Module:
    return nn.Linear(proj_dim, num_classes)


def onnx(w, v: str, prefix: str) -> str:
    from edge_svp.ort.graph import linear

    return linear(w, v, f"{prefix}weight", f"{prefix}bias")
