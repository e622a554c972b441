import torch

from edge_svp.svp import RandomProjection


def test_same_seed_same_matrix_other_seed_other_matrix():
    a, b, c = (
        RandomProjection(20, 8, seed=3),
        RandomProjection(20, 8, seed=3),
        RandomProjection(20, 8, seed=4),
    )
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, c.weight)


def test_projection_is_independent_of_the_global_rng():
    torch.manual_seed(0)
    a = RandomProjection(10, 5, seed=1)
    torch.manual_seed(123)
    b = RandomProjection(10, 5, seed=1)
    assert torch.equal(a.weight, b.weight)


def test_projection_is_a_buffer_not_a_parameter():
    p = RandomProjection(10, 5, seed=1)
    assert list(p.parameters()) == []
    assert "weight" in p.state_dict()


def test_entries_have_variance_one_over_d0():
    p = RandomProjection(2000, 100, seed=0)
    assert abs(p.weight.var().item() * 100 - 1.0) < 0.05
