"""Adam's state in bf16 and fp8 (edge_svp/training/low_precision_state.py)."""

import io

import pytest
import torch

from edge_svp.config import OptimConfig
from edge_svp.training import low_precision_state
from edge_svp.training.optim import OptimizerLevers, make_optimizer

pytest.importorskip("torchao")

# weights whose sizes 256 divides (fp8 blocks of 256), does not (blocks of 64: 125 x 64), a
# small bias (fp32 state, as torchao keeps it) and one too oddly sized for a block (fp32)
SHAPES = [(128, 64), (125, 64), (64,), (101, 97)]


def params():
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(*shape)) for shape in SHAPES]


def train(state_precision: str, steps: int = 20, name: str = "adam") -> list[torch.Tensor]:
    """`params()` after `steps` steps of Adam towards fixed targets."""
    ps = params()
    optimizer = make_optimizer(ps, OptimConfig(name=name, lr=1e-2, weight_decay=0.01),
                               OptimizerLevers(state_precision))  # fmt: skip
    targets = [torch.randn_like(p) for p in ps]
    for _ in range(steps):
        loss = sum(((p - t) ** 2).sum() for p, t in zip(ps, targets, strict=True))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return ps, optimizer


def test_state_is_held_in_the_precision_asked_for():
    _, bf16 = train("bf16", steps=1)
    assert all(s["exp_avg"].dtype == torch.bfloat16 for s in bf16.state.values())
    _, fp8 = train("fp8", steps=1)
    kinds = [type(fp8.state[p]["exp_avg_sq"]).__name__ for p in fp8.param_groups[0]["params"]]
    assert kinds == ["OptimStateFp8", "OptimStateFp8", "Tensor", "Tensor"]
    blocks = [fp8.state[p]["exp_avg"].block_size for p in fp8.param_groups[0]["params"][:2]]
    assert blocks == [256, 64]


@pytest.mark.parametrize("name", ["adam", "adamw"])
@pytest.mark.parametrize("state_precision", ["bf16", "fp8"])
def test_low_precision_state_steps_close_to_fp32(state_precision, name):
    exact, _ = train("fp32", name=name)
    low, _ = train(state_precision, name=name)
    start = params()
    for p, q, p0 in zip(exact, low, start, strict=True):
        moved = (p - p0).abs().mean()
        assert (p - q).abs().mean() < 0.05 * moved  # within 5 % of how far the weights moved


@pytest.mark.parametrize("state_precision", ["bf16", "fp8"])
def test_a_step_in_chunks_is_the_step_in_one_piece(state_precision, monkeypatch):
    whole, _ = train(state_precision, steps=3)
    monkeypatch.setattr(low_precision_state, "CHUNK", 512)  # every weight in several pieces
    chunked, _ = train(state_precision, steps=3)
    for p, q in zip(whole, chunked, strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("state_precision", ["bf16", "fp8"])
def test_state_survives_a_checkpoint_in_its_precision(state_precision):
    ps, optimizer = train(state_precision, steps=2)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # as checkpoints are read
    restored = make_optimizer(ps, OptimConfig(lr=1e-2, weight_decay=0.01),
                              OptimizerLevers(state_precision))  # fmt: skip
    restored.load_state_dict(saved)
    for p in ps:
        before, after = optimizer.state[p], restored.state[p]
        assert type(after["exp_avg"]) is type(before["exp_avg"])
        assert after["exp_avg"].dtype == before["exp_avg"].dtype
    # and both step alike from there
    for p in ps:
        p.grad = torch.ones_like(p)
    copies = [p.detach().clone() for p in ps]
    optimizer.step()
    stepped = [p.detach().clone() for p in ps]
    for p, c in zip(ps, copies, strict=True):
        p.data.copy_(c)
    restored.step()
    for p, s in zip(ps, stepped, strict=True):
        assert torch.equal(p, s)
