"""ORT's first training step equals torch's on the same weights and batch."""

import pytest
import torch

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
        ("cnn", {"projection": "hadamard"}),  # exported as the matrix it applies
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


def test_first_step_matches_torch_without_the_attention_norm_s_scale(tmp_path):
    config = tiny_config("vit")
    config.model.options.attention_norm_affine = False
    net = tiny_network(config)
    export(tmp_path, config, net)
    for index in range(len(net)):
        result = first_step(net, tmp_path / "export", index)
        assert result.loss_diff < 1e-4, result
        assert result.max_grad_diff < 1e-4, result


def test_first_step_matches_torch_with_a_class_token(tmp_path):
    config = tiny_config("vit", token_pool="first")
    config.model.options.class_token = True
    net = tiny_network(config)
    export(tmp_path, config, net)
    for index in range(len(net)):
        result = first_step(net, tmp_path / "export", index)
        assert result.loss_diff < 1e-4, result
        assert result.max_grad_diff < 1e-4, result


def test_projection_dropout_is_active_in_training_only(tmp_path):
    import numpy as np

    from edge_svp.ort.manifest import Manifest
    from edge_svp.ort.runtime import BlockSession

    config = tiny_config("mlp", proj_dropout=0.5)
    net = tiny_network(config)
    export(tmp_path, config, net)
    trainer = BlockSession(tmp_path / "export", Manifest.read(tmp_path / "export").blocks[0])
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((16, 20), np.float32),
             "v_ref": rng.standard_normal((16, 8), np.float32),
             "labels": rng.integers(0, 5, 16)}  # fmt: skip
    trainer.module.train()
    train_losses = {float(trainer.forward(feeds)["loss"]) for _ in range(4)}
    eval_losses = {float(trainer.evaluate(feeds)["loss"]) for _ in range(2)}
    assert len(train_losses) > 1 and len(eval_losses) == 1  # new masks, then none
    net.eval()
    with torch.no_grad():
        x, v_ref, y = (torch.from_numpy(feeds[k]) for k in ("x", "v_ref", "labels"))
        expected = net.objectives[0](net.blocks[0](x), v_ref, y).loss.item()
    assert abs(eval_losses.pop() - expected) < 1e-4


def test_sgd_without_momentum_trains(tmp_path):
    import numpy as np
    from ort_helpers import learnable_data

    from edge_svp.config import override
    from edge_svp.ort import runtime

    config = override(tiny_config("mlp", epochs=3), **{"optim.name": "sgd", "optim.momentum": 0.0,
                                                      "optim.lr": 0.05})  # fmt: skip
    export(tmp_path, config, tiny_network(config))
    x, y = learnable_data("mlp", 128)
    records = runtime.train(tmp_path / "export", runtime.Split(x, y), runtime.Split(x, y))
    losses = [r["loss"] for r in records if r["block"] == 1]
    assert losses[-1] < losses[0] and np.isfinite(losses).all()
