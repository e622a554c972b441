"""The one training step (edge_svp/training/step.py): accumulation, stepping, NaN and inf."""

import pytest
import torch

from edge_svp import SVPConfig, SVPNetwork, load_dataset
from edge_svp.config import MLPOptions, OptimConfig
from edge_svp.data import Preprocess
from edge_svp.models import build_blocks
from edge_svp.training.step import BlockTrainer, StepSettings, step_blocks

CPU = torch.device("cpu")


def mlp(seed: int = 0) -> SVPNetwork:
    torch.manual_seed(seed)
    blocks = build_blocks("mlp", MLPOptions(widths=[32, 32]), (64,))
    return SVPNetwork(blocks, (64,), 10, SVPConfig(proj_dim=16, beta=0.5), seed=seed).double()


def trainers(net) -> list[BlockTrainer]:
    optim = OptimConfig(name="adam", lr=1e-2)
    return [
        BlockTrainer(i + 1, (net.blocks[i], net.objectives[i], net.trainable_parameters(i)),
                     StepSettings(optim, 10, "fp32", CPU))
        for i in range(len(net))
    ]  # fmt: skip


def joint_step(net, blocks, x, y, chunks: int) -> None:
    """One batch of the joint schedule, in `chunks` micro-batches."""
    for idx in torch.arange(len(y)).chunk(chunks):
        h, v_ref = x[idx], net.reference(x[idx])
        for trainer in blocks:
            h, out = trainer.micro_step(h, v_ref, y[idx], len(idx) / len(y))
            v_ref = out.v
    assert step_blocks(blocks, False, lambda block, what: AssertionError(what))


@pytest.fixture(scope="module")
def batch():
    digits = load_dataset("digits")
    pre = Preprocess.fit(digits.x_train, normalize=True, augment=False)
    return pre(digits.x_train[:96], train=True).double(), digits.y_train[:96]


def test_micro_batches_accumulate_to_the_whole_batch_step(batch):
    """Three optimizer steps in 4 micro-batches each give the weights that three whole-batch
    steps give: in float64, to rounding (the losses are batch means, weighted by share)."""
    x, y = batch
    whole, micro = mlp(), mlp()
    whole_trainers, micro_trainers = trainers(whole), trainers(micro)
    for _ in range(3):
        joint_step(whole, whole_trainers, x, y, chunks=1)
        joint_step(micro, micro_trainers, x, y, chunks=4)
    for (name, a), b in zip(whole.state_dict().items(), micro.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-12), name
    changed = [
        not torch.equal(a, b) for a, b in zip(whole.parameters(), mlp().parameters(), strict=True)
    ]
    assert all(changed)  # the steps did move every weight


def test_a_nonfinite_loss_stops_or_skips_the_batch(batch):
    x, y = batch
    net = mlp()
    blocks = trainers(net)
    before = [p.detach().clone() for p in net.parameters()]
    bad = x.clone()
    bad[0, 0] = float("nan")

    def fault(block, what):
        return RuntimeError(f"block {block}: {what}")

    h, v_ref = bad, net.reference(bad)
    for trainer in blocks:
        h, out = trainer.micro_step(h, v_ref, y, 1.0)
        v_ref = out.v
    with pytest.raises(RuntimeError, match="block 1: loss"):
        step_blocks(blocks, False, fault)
    assert not step_blocks(blocks, True, fault)  # skipped: no optimizer step
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert all(p.grad is None for p in net.parameters())  # and its gradients are gone


def test_a_nonfinite_gradient_is_named(batch):
    x, y = batch
    net = mlp()
    blocks = trainers(net)
    blocks[1].micro_step(net.blocks[0](x).detach(), net.reference(x), y, 1.0)
    next(net.blocks[1].parameters()).grad[0, 0] = float("inf")
    with pytest.raises(RuntimeError, match="block 2: gradients"):
        step_blocks(blocks[1:], False, lambda block, what: RuntimeError(f"block {block}: {what}"))
