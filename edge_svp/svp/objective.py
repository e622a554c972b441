"""The local objective of one block (docs/svp.md):

    v_l = dropout(R_l pool(a_l(h_l)))
    L_l = CE(g_l(v_l), y) + beta * D(softmax(v_l/T) || softmax(v_ref/T)) + lam * A(v_l, v_ref)

where v_ref = sg(v_{l-1}) is the previous block's clean projection (or R_0 pool(x) for the
first block), brought to this block's d0 by a fixed projection when the widths differ, and
a_l is the identity, or with svp.aux_blocks = k trainable copies of the k blocks after this
one (auxiliary layers, trained with the block and its head; AugLocal's idea).

With svp.divergence_on = "posterior" (SLL's form) the divergence compares the blocks' class
posteriors instead, D(softmax(g_l(v_l)/T) || softmax(sg(g_{l-1}(v_{l-1}))/T)); the first
block, with no block before it, has no divergence term then.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edge_svp.registry import piece
from edge_svp.svp.pooling import pool, pooled_dim
from edge_svp.svp.projection import make_projection


@dataclass
class LocalOutput:
    loss: torch.Tensor
    logits: torch.Tensor
    v: torch.Tensor  # the next block's reference, detached: reference_of(h)
    terms: dict[str, torch.Tensor]  # ce, divergence, alignment (unweighted, detached)


class LocalObjective(nn.Module):
    """Projection R_l, head g_l and the loss terms for a block with outputs of `feature_shape`.

    `ref_dim` is the width of the reference v_{l-1}; `seed` fixes R_l (and the reference
    projection, if one is needed). `compare`: whether the divergence has a reference to
    compare with (not the first block's posterior: no block is before it). `auxiliary`, if
    given, is a_l, with outputs of `feature_shape`.
    """

    def __init__(self, feature_shape, ref_dim: int, num_classes: int, svp, seed: int,
                 compare: bool = True, auxiliary: nn.Module | None = None):  # fmt: skip
        super().__init__()
        self.auxiliary = auxiliary if auxiliary is not None else nn.Identity()
        self.pool_size = svp.pool_size
        self.token_pool = svp.token_pool
        self.proj_dropout = svp.proj_dropout
        self.temperature = svp.temperature
        self.beta = svp.beta
        self.lam = svp.lam
        self.divergence_name = svp.divergence
        self.alignment_name = svp.alignment
        self.divergence = piece("divergence", svp.divergence).loss
        self.alignment = piece("alignment", svp.alignment).loss
        self.posterior = svp.divergence_on == "posterior"
        self.compare = compare
        self.reference_dim = ref_dim
        in_dim = pooled_dim(tuple(feature_shape), svp.pool_size)
        self.projection = make_projection(svp.projection, in_dim, svp.proj_dim, seed,
                                          svp.store_projection)  # fmt: skip
        # what this block compares with its reference, and hands the next block as its own:
        # its class posterior, or its projection
        compared = self.output_width = num_classes if self.posterior else svp.proj_dim
        self.reference = (
            make_projection(svp.projection, ref_dim, compared, seed + 500_000, svp.store_projection)
            if ref_dim != compared and compare
            else nn.Identity()
        )
        self.head = piece("head", svp.head).build(svp.proj_dim, num_classes)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """v_l = R_l pool(a_l(h_l)), without dropout."""
        return self.projection(pool(self.auxiliary(h), self.pool_size, self.token_pool))

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        v = self.project(h)
        return self.head(F.dropout(v, self.proj_dropout, self.training))

    def reference_parts(self) -> list[str]:
        """The submodules reference_of uses: a_l, R_l, and the head where posteriors are
        compared (the next block holds only these of this objective)."""
        return ["auxiliary", "projection"] + ["head"] * self.posterior

    def trained(self) -> list[nn.Parameter]:
        """What the block's local loss trains here besides the block: a_l and the head."""
        return [*self.auxiliary.parameters(), *self.head.parameters()]

    def reference_of(self, h: torch.Tensor) -> torch.Tensor:
        """What the next block compares with: the clean projection v_l, or with
        divergence_on = "posterior" the clean logits g_l(v_l)."""
        v = self.project(h)
        return self.head(v) if self.posterior else v

    def forward(self, h: torch.Tensor, v_ref: torch.Tensor, y: torch.Tensor) -> LocalOutput:
        v_clean = self.project(h)
        v = F.dropout(v_clean, self.proj_dropout, self.training)
        logits = self.head(v)
        ce = F.cross_entropy(logits, y)
        loss = ce
        terms = {"ce": ce.detach()}
        v_ref = self.reference(v_ref.detach())
        if self.beta and self.divergence_name != "none" and self.compare:
            compared = logits if self.posterior else v
            d = self.divergence(compared, v_ref, self.temperature)
            loss = loss + self.beta * d
            terms["divergence"] = d.detach()
        if self.lam and self.alignment_name != "none":
            a = self.alignment(v, v_ref)
            loss = loss + self.lam * a
            terms["alignment"] = a.detach()
        reference = self.head(v_clean) if self.posterior else v_clean  # reference_of(h)
        return LocalOutput(loss=loss, logits=logits.detach(), v=reference.detach(), terms=terms)
