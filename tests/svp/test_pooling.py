import pytest
import torch

from edge_svp.svp import pool, pooled_dim


@pytest.mark.parametrize(
    "shape, size, expected",
    [((5, 7), 2, 7), ((5, 9, 16), 2, 16), ((5, 3, 8, 8), 2, 12), ((5, 3, 8, 8), 1, 3)],
)
def test_pooled_dim_matches_pool(shape, size, expected):
    h = torch.randn(*shape)
    assert pool(h, size).shape == (5, expected)
    assert pooled_dim(shape[1:], size) == expected


def test_token_pool_mean_and_first():
    h = torch.arange(12.0).reshape(1, 3, 4)
    assert torch.equal(pool(h, token_pool="mean"), h.mean(1))
    assert torch.equal(pool(h, token_pool="first"), h[:, 0])


def test_conv_pool_averages_quadrants():
    h = torch.zeros(1, 1, 4, 4)
    h[0, 0, :2, :2] = 4.0  # top-left quadrant only
    assert pool(h, 2).tolist() == [[4.0, 0.0, 0.0, 0.0]]
