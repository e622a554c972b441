"""No divergence term: plain local cross-entropy."""

import torch


def loss(v: torch.Tensor, v_ref: torch.Tensor, temperature: float) -> torch.Tensor:
    return v.new_zeros(())


def onnx(w, v: str, v_ref: str, temperature: float) -> None:
    return None  # no term in the graph
