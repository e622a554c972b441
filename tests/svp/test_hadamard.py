import math

import pytest
import torch

from edge_svp.svp import PROJECTIONS, make_projection
from edge_svp.svp.hadamard import factors, hadamard_matrix, walsh_hadamard


def test_hadamard_matrices_are_orthogonal_with_entries_of_one():
    h = hadamard_matrix(16)
    assert torch.equal(h.abs(), torch.ones(16, 16))
    assert torch.equal(h @ h.t(), 16 * torch.eye(16))


@pytest.mark.parametrize("n", [1, 2, 8, 32, 2048])
def test_the_factored_transform_multiplies_by_the_hadamard_matrix(n):
    a, b = factors(n)
    assert a * b == n and a <= b
    x = torch.randn(3, n, dtype=torch.float64)
    fast = walsh_hadamard(x, hadamard_matrix(a).double(), hadamard_matrix(b).double())
    assert torch.allclose(fast, x @ hadamard_matrix(n).double())


@pytest.mark.parametrize("kind", sorted(PROJECTIONS))
@pytest.mark.parametrize(("in_dim", "out_dim"), [(1000, 512), (64, 128), (2048, 10)])
def test_each_projection_applies_its_dense_matrix_and_is_fixed_by_its_seed(kind, in_dim, out_dim):
    p = make_projection(kind, in_dim, out_dim, seed=3)
    z = torch.randn(5, in_dim)
    assert p(z).shape == (5, out_dim)
    assert torch.allclose(p(z), z @ p.dense().t(), atol=1e-4)
    assert torch.equal(p.dense(), make_projection(kind, in_dim, out_dim, seed=3).dense())
    assert not torch.equal(p.dense(), make_projection(kind, in_dim, out_dim, seed=4).dense())
    assert list(p.parameters()) == []  # fixed: in the state dict, never in an optimizer


def test_hadamard_entries_are_plus_or_minus_one_over_root_d0_and_rows_distinct():
    p = make_projection("hadamard", 100, 300, seed=0)  # d0 above the padded width: stacked
    r = p.dense()
    assert torch.allclose(r.abs(), torch.full_like(r, 1 / math.sqrt(300)))
    assert len(set(map(tuple, r.sign().tolist()))) == 300


@pytest.mark.parametrize("kind", sorted(PROJECTIONS))
def test_each_projection_keeps_distances(kind):
    # Johnson-Lindenstrauss: squared distances kept in expectation, within a few tens of %
    p = make_projection(kind, 1000, 256, seed=1)
    x = torch.randn(40, 1000)
    before = torch.pdist(x) ** 2
    after = torch.pdist(p(x)) ** 2
    ratio = after / before
    assert abs(ratio.mean().item() - 1) < 0.05
    assert ratio.min().item() > 0.6 and ratio.max().item() < 1.4


def test_hadamard_stores_a_fraction_of_the_gaussian_matrix():
    def stored(p):
        return sum(b.numel() * b.element_size() for b in p.buffers())

    gaussian, hadamard = (make_projection(k, 2048, 512, seed=0) for k in ("gaussian", "hadamard"))
    assert stored(hadamard) * 100 < stored(gaussian)


def test_gradients_reach_the_projected_features():
    p = make_projection("hadamard", 20, 8, seed=0)
    z = torch.randn(4, 20, requires_grad=True)
    p(z).pow(2).sum().backward()
    r = p.dense()
    assert torch.allclose(z.grad, 2 * (z.detach() @ r.t()) @ r, atol=1e-5)
