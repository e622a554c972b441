import pytest

from edge_svp.config import load_profile, override
from edge_svp.distributed import mode
from edge_svp.distributed.launch import diagnose
from edge_svp.distributed.schedule import PIPELINED
from edge_svp.distributed.stages import (
    IN_FLIGHT,
    LABEL_BYTES,
    Layout,
    assign_stages,
    split_blocks,
    stage_peak,
    stream_bytes,
)
from edge_svp.errors import EdgeSVPError
from edge_svp.faults import rank_fault
from edge_svp.memory.plan import BlockCost

MB = 10**6


def costs(*params_mb):
    """Blocks of the given parameter sizes, 1000 floats in and out, 0.1 MB per example."""
    return [
        BlockCost((1000,), (1000,), int(p * MB), 0, 0, [(1, int(p * MB) + 100_000),
                                                        (64, int(p * MB) + 6_400_000)])
        for p in params_mb
    ]  # fmt: skip


def test_layout_is_stage_major():
    layout = Layout(world=6, stages=3)
    assert layout.replicas == 2
    assert [layout.stage(r) for r in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [layout.replica(r) for r in range(6)] == [0, 1, 0, 1, 0, 1]
    assert layout.stage_ranks(1) == [2, 3]
    assert layout.rank(2, 1) == 5
    with pytest.raises(EdgeSVPError, match="must divide"):
        Layout(world=3, stages=2)


def test_split_minimises_the_heaviest_stage():
    weights = [4, 1, 1, 1, 1, 4]

    def cost(a, b):
        return sum(weights[a:b])

    assert split_blocks(6, 2, cost) == [(0, 3), (3, 6)]
    assert split_blocks(6, 3, cost) == [(0, 1), (1, 5), (5, 6)]
    assert split_blocks(6, 6, cost) == [(i, i + 1) for i in range(6)]
    with pytest.raises(EdgeSVPError, match="cannot place 6 blocks on 7 stages"):
        split_blocks(6, 7, cost)


def test_stages_minimise_the_largest_predicted_peak():
    blocks, refs = costs(8, 1, 1, 1, 1, 8), [0] * 6

    def worst(runs):
        return max(stage_peak(blocks, a, b, 64, "cpu", refs) for a, b in runs)

    plans, micro_batch = assign_stages(blocks, 3, "cpu", 64, refs)
    every_split = [[(0, i), (i, j), (j, 6)] for i in range(1, 5) for j in range(i + 1, 6)]
    assert worst([(p.first, p.stop) for p in plans]) == min(worst(s) for s in every_split)
    assert micro_batch == 64


def test_the_first_rank_is_charged_the_weights_it_gathers_for_the_checkpoint():
    blocks, refs = costs(1, 1, 50), [0] * 3
    assert stage_peak(blocks, 0, 1, 64, "cpu", refs) > 50 * MB
    assert stage_peak(blocks, 1, 2, 64, "cpu", refs) < 20 * MB  # its own block and batch


def test_stream_buffers_are_charged_to_the_stage():
    c = costs(1, 1, 1)
    per_example = 4 * 1000 + LABEL_BYTES
    assert stream_bytes(c, 0, 1, 10) == IN_FLIGHT * 10 * per_example  # sends only
    assert stream_bytes(c, 1, 2, 10) == (1 + IN_FLIGHT) * 10 * per_example
    assert stream_bytes(c, 2, 3, 10) == 10 * per_example  # receives only


def test_a_per_rank_budget_shrinks_the_pipeline_micro_batch():
    blocks = costs(1, 1)
    free, full = assign_stages(blocks, 2, "cpu", 64, [0, 0])
    budget = max(p.predicted_peak for p in free) - 1
    plans, micro_batch = assign_stages(blocks, 2, "cpu", 64, [0, 0], budget)
    assert micro_batch < full == 64
    assert all(p.predicted_peak <= budget for p in plans)
    with pytest.raises(EdgeSVPError, match=r"stage \d \(block \d\) needs .* per-rank budget"):
        assign_stages(blocks, 2, "cpu", 64, [0, 0], budget=MB)


@pytest.mark.parametrize(
    "changes, message",
    [({"train.schedule": "layerwise"}, "SVP layerwise runs in one process"),
     ({"train.block_epochs": [1, 2], "train.epochs": 2}, "drop train.block_epochs"),
     ({"train.precision": "bf16"}, "a pipeline trains in fp32")],
)  # fmt: skip
def test_a_pipeline_refuses_what_its_stages_cannot_train(changes, message):
    with pytest.raises(EdgeSVPError, match=message):
        PIPELINED.check(override(load_profile("digits-mlp"), **changes))


def test_mode_needs_nproc_for_stages(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert mode(None, None) is None
    assert mode(2, None) == "launch"
    with pytest.raises(EdgeSVPError, match="--stages needs --nproc"):
        mode(None, 2)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert mode(None, 2) == "rank"
    with pytest.raises(EdgeSVPError, match="under torchrun"):
        mode(2, None)


def test_fault_hook_fires_on_its_rank_and_step_only(monkeypatch):
    monkeypatch.setenv("EDGE_SVP_FAULT", "1:3")
    rank_fault(0)(3)  # another rank: nothing
    hook = rank_fault(1)
    hook(2)
    with pytest.raises(RuntimeError, match="injected fault at step 3"):
        hook(3)


def test_diagnose_names_the_rank_that_failed_first():
    peer = {"kind": "peer", "message": "rank 1 is gone", "peer": 1}
    error = {"kind": "error", "message": "RuntimeError: boom", "peer": None}
    # rank 1 raised; rank 0 saw it go and stopped; rank 2 was stopped by the launcher
    code, message = diagnose([3, 1, -15], {0: peer, 1: error}, stopped={2})
    assert code == 1 and message.startswith("rank 1 failed: RuntimeError: boom")
    code, message = diagnose([3, -9], {0: peer}, stopped=set())
    assert message.startswith("rank 1 was killed by SIGKILL")
    hung = {"kind": "peer", "message": "rank 1 did not answer within 5 s", "peer": 1}
    code, message = diagnose([3, -15], {0: hung}, stopped={1})
    assert message.startswith("rank 1 did not answer within 5 s (seen by rank 0)")
    code, message = diagnose([2, 3], {0: {"kind": "input", "message": "bad", "peer": None}}, set())
    assert (code, message) == (2, "bad")
