"""Parts of a network on disk while others train (edge_svp/memory/offload.py)."""

import pytest
import torch

from edge_svp import SVPConfig, SVPNetwork
from edge_svp.config import MLPOptions
from edge_svp.errors import EdgeSVPError
from edge_svp.memory.offload import OffloadedModules, read_offloaded, resident_state
from edge_svp.models import build_blocks

CPU = torch.device("cpu")


def mlp() -> SVPNetwork:
    torch.manual_seed(0)
    blocks = build_blocks("mlp", MLPOptions(widths=[32, 32, 32], batchnorm=True), (20,))
    return SVPNetwork(blocks, (20,), 5, SVPConfig(proj_dim=8), seed=0)


def test_parts_on_disk_hold_no_data_and_come_back_as_they_were(tmp_path):
    net = mlp()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    weight = net.blocks[2][0].weight
    parts = OffloadedModules(net, tmp_path)
    # block 2 in training: its objective, and of the one before only what makes its
    # reference, R_1 (the head stays on disk)
    parts.keep_only({"blocks.1", "objectives.1", "objectives.0.projection"}, CPU)
    assert weight.numel() == 0 and net.blocks[0][1].weight.numel() == 0
    assert net.blocks[1][0].weight.shape == (32, 32)  # resident
    assert net.objectives[0].projection.weight.shape == (8, 32)
    assert net.objectives[0].head.weight.numel() == 0
    on_disk = {e["module"] for e in parts.manifest()}
    assert on_disk == {"blocks.0", "blocks.2", "objectives.0.head", "objectives.2.projection",
                       "objectives.2.head", "input_projection"}  # fmt: skip
    state = resident_state(net, parts.manifest())
    assert not any(k.startswith(("blocks.0.", "blocks.2.", "input_projection.")) for k in state)
    # a checkpoint's resident tensors and the files make the whole state dict again
    whole = read_offloaded(state, parts.manifest(), tmp_path)
    assert whole.keys() == before.keys()
    assert all(torch.equal(whole[k], v) for k, v in before.items())
    parts.bring_all_back(CPU)
    assert net.blocks[2][0].weight is weight  # the same Parameter: optimizers, hooks
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())


def test_a_damaged_part_is_one_line(tmp_path):
    net = mlp()
    parts = OffloadedModules(net, tmp_path)
    parts.keep_only({"blocks.0"}, CPU)
    (tmp_path / "blocks.1.pt").write_bytes(b"garbage")
    with pytest.raises(EdgeSVPError, match="blocks.1.pt fails its checksum"):
        parts.bring_all_back(CPU)
