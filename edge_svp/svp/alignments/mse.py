"""Mean squared difference over batch and projection dimensions."""

import torch


def loss(v: torch.Tensor, v_ref: torch.Tensor) -> torch.Tensor:
    return (v - v_ref).pow(2).mean()


def onnx(w, v: str, v_ref: str) -> str:
    from edge_svp.ort.graph import batch_mean

    diff = w.node("Sub", [v, v_ref])
    return batch_mean(w, w.node("Mul", [diff, diff]))
