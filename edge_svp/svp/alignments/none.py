"""No alignment term."""

import torch


def loss(v: torch.Tensor, v_ref: torch.Tensor) -> torch.Tensor:
    return v.new_zeros(())


def onnx(w, v: str, v_ref: str) -> None:
    return None  # no term in the graph
