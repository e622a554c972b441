"""The backprop baseline: gradients cross block boundaries, and activation checkpointing
recomputes without changing the gradients or counting a batch twice in BatchNorm."""

import torch

from edge_svp import SVPConfig, SVPNetwork
from edge_svp.config import CNNOptions, OptimConfig
from edge_svp.models import build_blocks
from edge_svp.training.backprop import backprop_step
from edge_svp.training.step import BlockTrainer, StepSettings

CPU = torch.device("cpu")
SHAPE = (3, 8, 8)


def cnn() -> SVPNetwork:
    torch.manual_seed(0)
    blocks = build_blocks("cnn", CNNOptions(channels=[[4], [8]]), SHAPE)
    return SVPNetwork(blocks, SHAPE, 10, SVPConfig(proj_dim=8), seed=0)


def backprop_trainer(net, recompute: bool) -> BlockTrainer:
    return BlockTrainer(len(net), backprop_step(net, recompute), StepSettings(OptimConfig(), 10))


def batch():
    torch.manual_seed(1)
    return torch.randn(16, *SHAPE), torch.randint(0, 10, (16,))


def test_backprop_reaches_the_first_block_from_the_last_head():
    net = cnn()
    x, y = batch()
    backprop_trainer(net, recompute=False).micro_step(x, None, y, 1.0)
    first = [p.grad for p in net.blocks[0].parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in first)
    assert all(p.grad is None for p in net.objectives[0].head.parameters())  # not trained


def test_recomputed_activations_give_each_block_the_same_gradients():
    x, y = batch()
    plain, recomputed = cnn(), cnn()
    calls = []
    for block in recomputed.blocks:  # its first layer: a recomputation stops when it has all
        block[0].register_forward_pre_hook(lambda *args: calls.append(1))
    backprop_trainer(plain, recompute=False).micro_step(x, None, y, 1.0)
    backprop_trainer(recomputed, recompute=True).micro_step(x, None, y, 1.0)
    assert len(calls) == 2 * len(recomputed.blocks)  # forward, then again in backward
    for a, b in zip(plain.blocks.parameters(), recomputed.blocks.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_recomputing_activations_counts_a_batch_once_in_batchnorm():
    x, y = batch()
    plain, recomputed = cnn(), cnn()
    backprop_trainer(plain, recompute=False).micro_step(x, None, y, 1.0)
    backprop_trainer(recomputed, recompute=True).micro_step(x, None, y, 1.0)
    for name, buffer in recomputed.blocks.named_buffers():
        assert torch.equal(buffer, dict(plain.blocks.named_buffers())[name]), name
    tracked = [b for n, b in recomputed.blocks.named_buffers() if n.endswith("num_batches_tracked")]
    assert tracked and all(int(t) == 1 for t in tracked)


def test_backprop_trains_the_standard_head_or_for_ablations_the_svp_head():
    from edge_svp.config import RunConfig
    from edge_svp.network import build_network

    x, y = batch()
    config = RunConfig()
    config.model.kind, config.model.options = "cnn", CNNOptions(channels=[[4], [8]])
    config.train.method = "bp"
    standard = build_network(config, SHAPE, 10)
    assert standard.classifier.linear.in_features == 8  # global average pooling of 8 maps
    config.train.bp_head = "svp"
    svp_head = build_network(config, SHAPE, 10)
    assert svp_head.classifier is None
    for net in (standard, svp_head):
        module, objective, params = backprop_step(net, recompute=False)
        trainer = BlockTrainer(2, (module, objective, params), StepSettings(OptimConfig(), 10))
        trainer.micro_step(x, None, y, 1.0)
        head = net.classifier if net.classifier is not None else net.objectives[-1].head
        assert params == [*net.blocks.parameters(), *head.parameters()]
        trained = {id(p) for p in params}
        assert all((p.grad is not None) == (id(p) in trained) for p in net.parameters())


def test_backprop_with_the_standard_head_holds_nothing_of_svp():
    from edge_svp.config import RunConfig
    from edge_svp.network import build_network

    config = RunConfig()
    config.model.kind, config.model.options = "cnn", CNNOptions(channels=[[4], [8]])
    svp = build_network(config, SHAPE, 10)
    config.train.method = "bp"
    bp = build_network(config, SHAPE, 10)
    blocks = sum(p.numel() for p in bp.blocks.parameters())
    classifier = sum(p.numel() for p in bp.classifier.parameters())
    assert sum(p.numel() for p in bp.parameters()) == blocks + classifier
    assert not any(name.startswith(("objectives", "input_projection")) for name in bp.state_dict())
    # the same seed draws the same blocks for either method, and SVP's objectives can be
    # rebuilt from a backprop network (its planner names SVP's smallest budget)
    assert all(torch.equal(a, b) for a, b in zip(bp.blocks.parameters(), svp.blocks.parameters(),
                                                 strict=True))  # fmt: skip
    counterpart = bp.svp_counterpart()
    assert torch.equal(
        counterpart.objectives[1].projection.weight, svp.objectives[1].projection.weight
    )
