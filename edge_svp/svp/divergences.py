"""Divergence terms D(softmax(v/T) || softmax(v_ref/T)), averaged over the batch.

A divergence is `fn(v, v_ref, temperature) -> scalar`; v_ref is already detached.
"""

import torch
import torch.nn.functional as F


def kl(v: torch.Tensor, v_ref: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p || q) with p = softmax(v/T), q = softmax(v_ref/T) (SVP v1-v3)."""
    log_p = F.log_softmax(v / temperature, dim=-1)
    log_q = F.log_softmax(v_ref / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def bhattacharyya(v: torch.Tensor, v_ref: torch.Tensor, temperature: float) -> torch.Tensor:
    """-log sum_i sqrt(p_i q_i) (SVP v4 / SLL)."""
    log_p = F.log_softmax(v / temperature, dim=-1)
    log_q = F.log_softmax(v_ref / temperature, dim=-1)
    # log of the Bhattacharyya coefficient, computed in log space for stability
    return -torch.logsumexp(0.5 * (log_p + log_q), dim=-1).mean()


def none(v: torch.Tensor, v_ref: torch.Tensor, temperature: float) -> torch.Tensor:
    return v.new_zeros(())


DIVERGENCES = {"kl": kl, "bhattacharyya": bhattacharyya, "none": none}
