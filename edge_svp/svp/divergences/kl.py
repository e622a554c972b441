"""KL(p || q) with p = softmax(v/T), q = softmax(v_ref/T) (SVP v1-v3)."""

import torch
import torch.nn.functional as F


def loss(v: torch.Tensor, v_ref: torch.Tensor, temperature: float) -> torch.Tensor:
    log_p = F.log_softmax(v / temperature, dim=-1)
    log_q = F.log_softmax(v_ref / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def onnx(w, v: str, v_ref: str, temperature: float) -> str:
    from edge_svp.ort.graph import batch_mean, log_softmax

    log_p, log_q = log_softmax(w, v, temperature), log_softmax(w, v_ref, temperature)
    terms = w.node("Mul", [w.node("Exp", [log_p]), w.node("Sub", [log_p, log_q])])
    return batch_mean(w, w.node("ReduceSum", [terms, w.axes(-1)], keepdims=0))
