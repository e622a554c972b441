import pytest
import torch
import torch.nn.functional as F

from edge_svp.config import SVPConfig
from edge_svp.svp import ALIGNMENTS, DIVERGENCES, LocalObjective


def make(**kw):
    cfg = SVPConfig(proj_dim=6, **kw)
    return LocalObjective((10,), ref_dim=6, num_classes=3, svp=cfg, seed=0)


def test_loss_is_ce_plus_weighted_terms():
    torch.manual_seed(0)
    obj = make(divergence="kl", alignment="mse", beta=0.3, lam=0.7, temperature=2.0)
    h, v_ref, y = torch.randn(4, 10), torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    out = obj(h, v_ref, y)
    v = obj.project(h)
    expected = (
        F.cross_entropy(obj.head(v), y)
        + 0.3 * DIVERGENCES["kl"](v, v_ref, 2.0)
        + 0.7 * ALIGNMENTS["mse"](v, v_ref)
    )
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(out.terms) == {"ce", "divergence", "alignment"}


def test_plain_ce_when_weights_are_zero():
    obj = make(divergence="kl", alignment="cosine", beta=0.0, lam=0.0)
    h, v_ref, y = torch.randn(4, 10), torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    out = obj(h, v_ref, y)
    assert out.loss.item() == pytest.approx(out.terms["ce"].item())


def test_reference_gets_no_gradient_and_v_is_detached():
    obj = make(alignment="mse", lam=1.0)
    h = torch.randn(4, 10, requires_grad=True)
    v_ref = torch.randn(4, 6, requires_grad=True)
    out = obj(h, v_ref, torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    assert v_ref.grad is None
    assert h.grad is not None
    assert not out.v.requires_grad


def test_reference_of_another_width_is_projected():
    cfg = SVPConfig(proj_dim=6, divergence="none", alignment="mse", lam=1.0)
    obj = LocalObjective((10,), ref_dim=9, num_classes=3, svp=cfg, seed=0)
    h, v_ref, y = torch.randn(2, 10), torch.randn(2, 9), torch.tensor([0, 1])
    out = obj(h, v_ref, y)
    assert obj.reference.weight.shape == (6, 9)
    v = obj.project(h)
    expected = F.cross_entropy(obj.head(v), y) + F.mse_loss(v, obj.reference(v_ref))
    assert torch.allclose(out.loss, expected)


def test_projection_dropout_only_in_training():
    obj = make(proj_dropout=0.5)
    h = torch.randn(64, 10)
    obj.eval()
    assert torch.equal(obj.classify(h), obj.classify(h))
    obj.train()
    assert not torch.equal(obj.classify(h), obj.classify(h))


def test_posterior_divergence_compares_the_heads_class_posteriors():
    """SLL's form: D(softmax(g_l(v_l)/T) || softmax(sg(previous logits)/T)); the reference
    handed on is this block's clean logits."""
    torch.manual_seed(0)
    cfg = SVPConfig(proj_dim=6, divergence="bhattacharyya", divergence_on="posterior",
                    beta=0.5, temperature=2.0)  # fmt: skip
    obj = LocalObjective((10,), ref_dim=3, num_classes=3, svp=cfg, seed=0)
    h, ref_logits, y = torch.randn(4, 10), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    out = obj(h, ref_logits, y)
    logits = obj.head(obj.project(h))
    expected = F.cross_entropy(logits, y) + 0.5 * DIVERGENCES["bhattacharyya"](
        logits, ref_logits, 2.0
    )
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.equal(out.v, logits.detach()) and torch.equal(out.v, obj.reference_of(h))
    first = LocalObjective((10,), ref_dim=6, num_classes=3, svp=cfg, seed=0, compare=False)
    out = first(h, torch.randn(4, 6), y)  # no block before it: cross-entropy alone
    assert set(out.terms) == {"ce"} and out.loss.item() == pytest.approx(out.terms["ce"].item())
