from itertools import pairwise

import pytest
import torch
from tiny_runs import Warnings

from edge_svp import (
    MemoryConfig,
    OptimConfig,
    Preprocess,
    SVPConfig,
    TrainConfig,
    build_network,
    load_dataset,
    load_profile,
    train,
)
from edge_svp.config import override
from edge_svp.errors import EdgeSVPError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").limit(600)


def small_config(**changes):
    config = load_profile("digits-mlp")
    small = {"model.widths": [64, 64], "svp.proj_dim": 32, "train.batch_size": 32, "optim.lr": 3e-3}
    return override(config, **{**small, **changes})


def net_for(config, data):
    return build_network(config, data.input_shape, data.num_classes)


@pytest.mark.parametrize(
    "method, schedule, recompute",
    [("svp", "joint", False), ("svp", "layerwise", False), ("bp", "joint", False),
     ("bp", "joint", True)],
)  # fmt: skip
def test_every_schedule_learns_digits(digits, method, schedule, recompute):
    config = small_config(**{"train.method": method, "train.schedule": schedule,
                             "train.epochs": 8, "train.recompute_activations": recompute})  # fmt: skip
    net = net_for(config, digits)
    records = train(net, digits, config.train, config.optim)
    last = records[-1]
    assert last["test_accuracy"] > 0.8  # chance is 0.1
    assert records[0]["loss"] > last["loss"]
    if method == "svp":
        assert {r["block"] for r in records} == {1, 2}
        assert len(records) == 2 * config.train.epochs
    else:
        assert {r["block"] for r in records} == {2}


def test_joint_training_feeds_every_block_a_detached_input(digits):
    """Asserted on the real training loop: no block input carries autograd history."""
    config = small_config(**{"train.epochs": 1, "svp.divergence": "kl", "svp.beta": 1.0})
    net = net_for(config, digits)
    seen = []
    hooks = [
        block.register_forward_pre_hook(
            lambda m, args, i=i: seen.append((i, args[0].requires_grad))
        )
        for i, block in enumerate(net.blocks)
    ]
    train(net, digits, config.train, config.optim)
    for h in hooks:
        h.remove()
    assert {i for i, _ in seen} == {0, 1}
    assert not any(requires_grad for _, requires_grad in seen)


def test_layerwise_freezes_each_block_after_its_stage(digits):
    config = small_config(**{"train.schedule": "layerwise", "train.epochs": 2})
    net = net_for(config, digits)
    snapshots = {}

    def on_epoch(records):
        r = records[0]
        if r["block"] == 1 and r["epoch"] == config.train.epochs:
            snapshots["block1"] = [p.detach().clone() for p in net.blocks[0].parameters()]

    train(net, digits, config.train, config.optim, on_epoch=on_epoch)
    after = list(net.blocks[0].parameters())
    assert all(torch.equal(a, b) for a, b in zip(snapshots["block1"], after, strict=True))


def test_same_seed_same_result(digits):
    config = small_config(**{"train.epochs": 1})
    results = []
    for _ in range(2):
        net = net_for(config, digits)
        results.append(train(net, digits, config.train, config.optim)[-1]["loss"])
    assert results[0] == results[1]


def test_user_sequential_trains_with_svp(digits):
    """A user's own nn.Sequential, no package edits: conv layers on 8x8 digits."""
    from torch import nn

    from edge_svp import Preprocess, SVPNetwork, block_accuracies

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16, 32), nn.ReLU(),
    )  # fmt: skip
    net = SVPNetwork.from_sequential(
        model, [3, 5], digits.input_shape, digits.num_classes, svp=SVPConfig(proj_dim=32)
    )
    train(net, digits, TrainConfig(epochs=8, batch_size=32), OptimConfig(lr=3e-3))
    accuracies = block_accuracies(net, digits, Preprocess.fit(digits.x_train, True, False))
    assert len(accuracies) == 3
    assert accuracies[-1] > 0.8


@pytest.mark.parametrize("kind, options", [
    ("cnn", {"model.channels": [[4], [8]]}),
    ("vit", {"model.patch_size": 4, "model.dim": 16, "model.heads": 2,
             "model.layers_per_block": [1, 1]}),
])  # fmt: skip
def test_conv_and_transformer_models_train(digits, kind, options):
    from edge_svp.config import config_from_dict, config_to_dict

    raw = config_to_dict(small_config(**{"train.epochs": 3}))
    raw["model"] = {"kind": kind, **{k.split(".")[1]: v for k, v in options.items()}}
    config = config_from_dict(raw)
    net = net_for(config, digits)
    records = train(net, digits, config.train, config.optim)
    assert len(records) == 6
    for block in (1, 2):
        losses = [r["loss"] for r in records if r["block"] == block]
        assert losses[-1] < losses[0]


def test_layerwise_from_disk_caches_trains_exactly_as_from_host(digits):
    from edge_svp import MemoryConfig

    config = small_config(**{"train.schedule": "layerwise", "train.epochs": 2})
    runs = {}
    for where, memory in {"host": MemoryConfig(), "disk": MemoryConfig(host_budget="1")}.items():
        net = net_for(config, digits)
        runs[where] = train(net, digits, config.train, config.optim, memory=memory)
    assert runs["disk"] == [
        {**r, "seconds": d["seconds"]} for r, d in zip(runs["host"], runs["disk"], strict=True)
    ]


def test_layerwise_with_recomputed_prefix_learns(digits):
    from edge_svp import MemoryConfig

    config = small_config(**{"train.schedule": "layerwise", "train.epochs": 8})
    net = net_for(config, digits)
    records = train(net, digits, config.train, config.optim, memory=MemoryConfig(recompute=True))
    assert records[-1]["block"] == 2 and records[-1]["test_accuracy"] > 0.8


@pytest.mark.parametrize("schedule", ["joint", "layerwise"])
def test_posterior_divergence_warm_up_and_block_learning_rates_train(digits, schedule):
    config = small_config(**{"train.schedule": schedule, "train.epochs": 8,
                             "svp.divergence_on": "posterior", "svp.beta": 0.3,
                             "optim.warmup_epochs": 1.0, "optim.block_lr": [2.0, 0.5]})  # fmt: skip
    net = net_for(config, digits)
    assert net.objectives[1].reference_dim == digits.num_classes  # block 1's logits
    records = train(net, digits, config.train, config.optim)
    assert records[-1]["test_accuracy"] > 0.8
    first = [r["lr"] for r in records if r["block"] == 1]
    assert first[0] > first[-1]  # warmed up within the first epoch, then decayed


def test_each_layerwise_block_trains_its_own_epochs_and_learning_rate_schedule(digits):
    config = small_config(**{"train.schedule": "layerwise", "train.epochs": 5,
                             "train.block_epochs": [3, 1], "optim.lr_schedule": "cosine"})  # fmt: skip
    net = net_for(config, digits)
    records = train(net, digits, config.train, config.optim)
    assert [(r["block"], r["epoch"]) for r in records] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    # each block's cosine decays to zero over its own epochs (over train.epochs, the 5 of the
    # run, block 1 would end at 3/5 of its way down, block 2 at 1/5)
    last_lr = {r["block"]: r["lr"] for r in records}
    assert all(lr < 1e-9 for lr in last_lr.values()), last_lr


def test_a_joint_block_whose_epochs_are_done_runs_frozen_while_deeper_ones_train(digits):
    config = small_config(**{"train.epochs": 3, "train.block_epochs": [1, 3],
                             "optim.lr_schedule": "cosine"})  # fmt: skip
    net = net_for(config, digits)
    weights, calls = [], []  # block 1's and block 2's after each epoch; block 1's forwards

    def keep(records):
        weights.append([[p.detach().clone() for p in net.trainable_parameters(i)] for i in (0, 1)])
        calls.append("epoch")

    net.blocks[0].register_forward_pre_hook(
        lambda module, args: calls.append((module.training, torch.is_grad_enabled()))
    )
    records = train(net, digits, config.train, config.optim, on_epoch=keep)
    assert [(r["block"], r["epoch"]) for r in records] == [(1, 1), (2, 1), (1, 2), (2, 2),
                                                           (1, 3), (2, 3)]  # fmt: skip
    same = [[all(torch.equal(a, b) for a, b in zip(*pair, strict=True))
             for pair in zip(before, after, strict=True)]
            for before, after in pairwise(weights)]  # fmt: skip
    assert same == [[True, False], [True, False]]  # block 1 done after epoch 1, block 2 not
    after_epoch_1 = calls[calls.index("epoch") :]
    assert (True, True) in calls and (True, True) not in after_epoch_1
    assert (False, False) in after_epoch_1  # frozen: eval mode, no autograd graph
    lr = {(r["block"], r["epoch"]): r["lr"] for r in records}
    assert lr[1, 1] < 1e-9 and lr[2, 1] > 1e-4  # each cosine over the block's own epochs
    # the frozen block's loss and accuracy are still measured, as its test accuracy is
    assert all(r["loss"] > 0 and r["train_accuracy"] > 0.1 for r in records)


def test_block_epochs_are_refused_where_the_whole_network_trains(digits):
    """From the Python API too (a configuration file or --set is refused when it is read)."""
    config = small_config(**{"train.method": "bp"})
    bp = TrainConfig(method="bp", epochs=3, block_epochs=[3, 1])
    with pytest.raises(EdgeSVPError, match="block_epochs is for SVP's blocks"):
        train(net_for(config, digits), digits, bp, config.optim)


@pytest.mark.parametrize(
    "method, schedule", [("svp", "joint"), ("svp", "layerwise"), ("bp", "joint")]
)
def test_stepping_in_backward_trains_the_same_weights(digits, method, schedule):
    """An optimizer stepped inside backward (no budget: the configuration fixes it) takes
    the very steps it takes after backward."""
    nets = []
    for in_backward in ("off", "on"):
        config = small_config(**{"train.method": method, "train.schedule": schedule,
                                 "train.epochs": 2, "optim.step_in_backward": in_backward})  # fmt: skip
        torch.manual_seed(0)
        nets.append(net_for(config, digits))
        train(nets[-1], digits, config.train, config.optim)
    for (key, a), b in zip(
        nets[0].state_dict().items(), nets[1].state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key


@pytest.mark.parametrize(
    "method, schedule", [("svp", "joint"), ("svp", "layerwise"), ("bp", "joint")]
)
def test_optimizer_state_in_fp8_learns_digits(digits, method, schedule):
    pytest.importorskip("torchao")
    config = small_config(**{"train.method": method, "train.schedule": schedule,
                             "train.epochs": 8, "optim.state_precision": "fp8"})  # fmt: skip
    net = net_for(config, digits)
    records = train(net, digits, config.train, config.optim)
    assert records[-1]["test_accuracy"] > 0.8  # chance is 0.1


@pytest.mark.parametrize("schedule", ["joint", "layerwise"])
def test_auxiliary_layers_train_and_their_block_learns(digits, schedule):
    config = small_config(**{"train.schedule": schedule, "train.epochs": 4, "svp.aux_blocks": 1})
    net = net_for(config, digits)
    start = net.objectives[0].auxiliary[0][0].weight.detach().clone()
    records = train(net, digits, config.train, config.optim)
    assert not torch.equal(net.objectives[0].auxiliary[0][0].weight, start)
    first = [r for r in records if r["block"] == 1]
    assert first[-1]["test_accuracy"] > 0.8 and first[0]["loss"] > first[-1]["loss"]


@pytest.mark.parametrize("recompute", [False, True])
def test_layerwise_says_when_augmentation_does_not_reach_the_later_blocks(digits, recompute):
    config = small_config(**{"train.schedule": "layerwise", "train.epochs": 1,
                             "model.widths": [32, 32, 32]})  # fmt: skip
    augmented = Preprocess.fit(digits.x_train, normalize=True, augment=True)
    reporter = Warnings()
    train(net_for(config, digits), digits, config.train, config.optim, augmented, reporter,
          memory=MemoryConfig(recompute=recompute))  # fmt: skip
    if recompute:
        assert reporter.lines == []
    else:
        [warning] = reporter.lines
        assert "does not reach blocks 2-3" in warning and "--recompute" in warning
