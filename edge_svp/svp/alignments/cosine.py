"""1 - cos(v, v_ref): 0 when aligned, 2 when opposite."""

import torch
import torch.nn.functional as F


def loss(v: torch.Tensor, v_ref: torch.Tensor) -> torch.Tensor:
    return (1.0 - F.cosine_similarity(v, v_ref, dim=-1, eps=1e-8)).mean()


def onnx(w, v: str, v_ref: str) -> str:
    """Each norm clamped at 1e-8, as torch.cosine_similarity does."""
    from edge_svp.ort.graph import batch_mean

    def norm(x: str) -> str:
        squares = w.node("ReduceSum", [w.node("Mul", [x, x]), w.axes(-1)], keepdims=0)
        return w.node("Max", [w.node("Sqrt", [squares]), w.scalar(1e-8)])

    dot = w.node("ReduceSum", [w.node("Mul", [v, v_ref]), w.axes(-1)], keepdims=0)
    cos = w.node("Div", [dot, w.node("Mul", [norm(v), norm(v_ref)])])
    return w.node("Sub", [w.scalar(1.0), batch_mean(w, cos)])
