"""ORT's first training step equals torch's on the same weights and batch."""

import pytest

pytest.importorskip(
    "onnxruntime.training", reason="onnxruntime-training (the ort extra) is not installed"
)

from ort_helpers import export, tiny_config, tiny_network  # noqa: E402

from edge_svp.config import SVPConfig  # noqa: E402
from edge_svp.ort.parity import first_step  # noqa: E402

FULL = {"divergence": "kl", "beta": 0.5, "temperature": 2.0, "alignment": "cosine", "lam": 0.3}


@pytest.mark.parametrize("kind", ["mlp", "cnn", "vit"])
def test_first_step_matches_torch_for_every_block(tmp_path, kind):
    config = tiny_config(kind, **FULL)
    # block 2 has another d0, so its reference goes through the extra fixed projection
    net = tiny_network(config, [SVPConfig(proj_dim=8, **FULL), SVPConfig(proj_dim=6, **FULL)])
    export(tmp_path, config, net)
    for index in range(len(net)):
        result = first_step(net, tmp_path / "export", index)
        assert result.loss_diff < 1e-4, result
        assert result.max_grad_diff < 1e-4, result


@pytest.mark.parametrize(
    "kind, options",
    [
        ("mlp", {"divergence": "kl", "beta": 1.0}),
        ("mlp", {"divergence": "bhattacharyya", "beta": 1.0, "temperature": 2.0}),
        ("mlp", {"alignment": "cosine", "lam": 1.0}),
        ("mlp", {"alignment": "mse", "lam": 1.0}),
        ("mlp", {"head": "mlp"}),
        ("vit", {"token_pool": "first", "alignment": "mse", "lam": 0.5}),
    ],
)
def test_first_step_matches_torch_for_each_loss_option(tmp_path, kind, options):
    config = tiny_config(kind, **options)
    net = tiny_network(config)
    export(tmp_path, config, net)
    result = first_step(net, tmp_path / "export", 0)
    assert result.loss_diff < 1e-4, result
    assert result.max_grad_diff < 1e-4, result
