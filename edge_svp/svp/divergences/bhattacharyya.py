"""Bhattacharyya distance -log sum_i sqrt(p_i q_i) (SVP v4 / SLL)."""

import torch
import torch.nn.functional as F


def loss(v: torch.Tensor, v_ref: torch.Tensor, temperature: float) -> torch.Tensor:
    log_p = F.log_softmax(v / temperature, dim=-1)
    log_q = F.log_softmax(v_ref / temperature, dim=-1)
    # log of the Bhattacharyya coefficient, computed in log space for stability
    return -torch.logsumexp(0.5 * (log_p + log_q), dim=-1).mean()


def onnx(w, v: str, v_ref: str, temperature: float) -> str:
    from edge_svp.ort.graph import batch_mean, log_softmax

    log_p, log_q = log_softmax(w, v, temperature), log_softmax(w, v_ref, temperature)
    half = w.node("Mul", [w.node("Add", [log_p, log_q]), w.scalar(0.5)])
    log_coefficient = w.node("ReduceLogSumExp", [half, w.axes(-1)], keepdims=0)
    return w.node("Neg", [batch_mean(w, log_coefficient)])
