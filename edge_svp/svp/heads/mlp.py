"""Two linear layers with a ReLU between, the hidden layer as wide as the projection."""

from torch import nn


def build(proj_dim: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(proj_dim, proj_dim), nn.ReLU(), nn.Linear(proj_dim, num_classes))


def onnx(w, v: str, prefix: str) -> str:
    from edge_svp.ort.graph import linear

    hidden = w.node("Relu", [linear(w, v, f"{prefix}0.weight", f"{prefix}0.bias")])
    return linear(w, hidden, f"{prefix}2.weight", f"{prefix}2.bias")
