import math

import pytest
import torch

from edge_svp.svp import ALIGNMENTS, DIVERGENCES

# p = softmax([0, 0]) = [1/2, 1/2];  q = softmax([ln 3, 0]) = [3/4, 1/4]
V = torch.tensor([[0.0, 0.0]])
V_REF = torch.tensor([[math.log(3.0), 0.0]])


def test_kl_matches_hand_computed_value():
    # KL(p||q) = 1/2 ln(2/3) + 1/2 ln(2) = 1/2 ln(4/3)
    assert DIVERGENCES["kl"](V, V_REF, 1.0).item() == pytest.approx(0.5 * math.log(4 / 3))


def test_bhattacharyya_matches_hand_computed_value():
    coefficient = math.sqrt(0.5 * 0.75) + math.sqrt(0.5 * 0.25)
    expected = -math.log(coefficient)
    assert DIVERGENCES["bhattacharyya"](V, V_REF, 1.0).item() == pytest.approx(expected)


@pytest.mark.parametrize("name", ["kl", "bhattacharyya"])
def test_temperature_divides_the_logits(name):
    # dividing by T = 2 turns [2 ln 3, 0] into [ln 3, 0]
    fn = DIVERGENCES[name]
    assert fn(V, 2 * V_REF, 2.0).item() == pytest.approx(fn(V, V_REF, 1.0).item())


@pytest.mark.parametrize("name", ["kl", "bhattacharyya"])
def test_divergence_of_identical_distributions_is_zero(name):
    v = torch.randn(4, 7)
    assert DIVERGENCES[name](v, v.clone(), 1.5).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_is_a_batch_mean():
    v = torch.cat([V, V_REF])
    ref = torch.cat([V_REF, V_REF])
    assert DIVERGENCES["kl"](v, ref, 1.0).item() == pytest.approx(0.25 * math.log(4 / 3))


def test_cosine_alignment_matches_hand_computed_value():
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    ref = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    # 1 - cos 45 deg = 1 - 1/sqrt 2; 1 - cos 180 deg = 2; mean over the batch
    expected = ((1 - 1 / math.sqrt(2)) + 2.0) / 2
    assert ALIGNMENTS["cosine"](v, ref).item() == pytest.approx(expected)


def test_mse_alignment_matches_hand_computed_value():
    v = torch.tensor([[1.0, 2.0]])
    ref = torch.tensor([[0.0, 0.0]])
    assert ALIGNMENTS["mse"](v, ref).item() == pytest.approx(2.5)


def test_none_terms_are_zero():
    v = torch.randn(3, 4)
    assert DIVERGENCES["none"](v, -v, 1.0).item() == 0.0
    assert ALIGNMENTS["none"](v, -v).item() == 0.0
