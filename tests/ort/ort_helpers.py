"""Tiny networks of every model kind, and their ORT exports, for the ORT tests."""

import numpy as np
import torch

from edge_svp.config import RunConfig, SVPConfig, config_from_dict
from edge_svp.data import Preprocess
from edge_svp.network import SVPNetwork, build_network

NUM_CLASSES = 5
CLASSES = [f"c{i}" for i in range(NUM_CLASSES)]
# 10x10 images pool 5x5 maps to 2x2 with overlapping bins: the general adaptive-pool case
INPUT_SHAPES = {"mlp": (20,), "cnn": (3, 10, 10), "vit": (3, 8, 8)}
MODELS = {
    "mlp": {"kind": "mlp", "widths": [16, 12]},
    "cnn": {"kind": "cnn", "channels": [[4], [6]]},
    "vit": {"kind": "vit", "patch_size": 4, "dim": 16, "heads": 2, "mlp_ratio": 2,
            "layers_per_block": [1, 1]},
}  # fmt: skip


def tiny_config(kind: str, epochs: int = 2, **svp) -> RunConfig:
    return config_from_dict(
        {
            "model": MODELS[kind],
            "svp": {"proj_dim": 8, **svp},
            "train": {"schedule": "layerwise", "epochs": epochs, "batch_size": 16},
            "optim": {"lr": 0.003},
        }
    )


def tiny_network(config: RunConfig, svps: list[SVPConfig] | None = None):
    net = build_network(config, INPUT_SHAPES[config.model.kind], NUM_CLASSES)
    if svps is None:
        return net
    torch.manual_seed(config.train.seed)
    return SVPNetwork(list(net.blocks), net.input_shape, NUM_CLASSES, svps, config.train.seed)


def identity_preprocess(kind: str) -> Preprocess:
    channels = INPUT_SHAPES[kind][0] if len(INPUT_SHAPES[kind]) == 3 else 1
    return Preprocess([0.0] * channels, [1.0] * channels)


def export(tmp_path, config, net):
    from edge_svp.ort.export import export_training

    kind = config.model.kind
    return export_training(
        net, config, CLASSES, identity_preprocess(kind), torch.float32, tmp_path / "export"
    )


def learnable_data(kind: str, n: int, seed: int = 0):
    """Float inputs whose class is a fixed linear function of the input: a task that a few
    epochs visibly learn."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *INPUT_SHAPES[kind])).astype(np.float32)
    teacher = np.random.default_rng(99).standard_normal((x[0].size, NUM_CLASSES))
    y = (x.reshape(n, -1) @ teacher).argmax(1).astype(np.int64)
    return x, y
