"""ORT-trained weights back into the torch network, so `edge-svp eval` and the inference
export work on a run trained by the ORT backend or on a device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edge_svp.errors import EdgeSVPError
from edge_svp.network import SVPNetwork
from edge_svp.ort.manifest import Manifest
from edge_svp.ort.runtime import ort_api

HEAD = "head."


def read_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of an ORT checkpoint (trainable and frozen), by name."""
    _, api = ort_api()
    if not path.exists():
        raise EdgeSVPError(f"{path} does not exist: train this block first")
    state = api.CheckpointState.load_checkpoint(str(path))
    return {name: np.array(parameter.data) for name, parameter in state.parameters}


def load_trained_weights(net: SVPNetwork, export_dir: str | Path, blocks=None) -> None:
    """Copy each block's trained_checkpoint (or only `blocks`, 1-based) into `net`: the
    block's parameters and BatchNorm statistics, and its head. The fixed projections are the
    same on both sides and stay as they are; so does BatchNorm's num_batches_tracked, which
    ONNX does not carry."""
    export_dir = Path(export_dir)
    manifest = Manifest.read(export_dir)
    if len(manifest.blocks) != len(net):
        raise EdgeSVPError(
            f"{export_dir} has {len(manifest.blocks)} blocks, the network {len(net)}"
        )
    for entry in manifest.blocks:
        if blocks is not None and entry.index not in blocks:
            continue
        values = read_checkpoint(export_dir / entry.directory / entry.trained_checkpoint)
        targets = [(net.blocks[entry.index - 1], ""), (net.objectives[entry.index - 1].head, HEAD)]
        for module, prefix in targets:
            state = module.state_dict()
            for key, tensor in state.items():
                if prefix + key in values:
                    state[key] = torch.from_numpy(values[prefix + key]).reshape(tensor.shape)
            module.load_state_dict(state)
