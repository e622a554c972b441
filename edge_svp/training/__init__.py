"""Training schedules: joint and layerwise SVP, and the backprop baseline.

    train(net, dataset)                       # SVP, joint schedule, defaults
    train(net, dataset, TrainConfig(schedule="layerwise", epochs=5))
    train(net, dataset, memory=MemoryConfig(budget="256MB"))

Every method runs as a MemoryPlan says (micro-batch, cache locations, and for backprop
whether activations are recomputed); without a budget the plan keeps the whole batch and
caches in host RAM. Every schedule trains its blocks
through BlockTrainers (training/step.py), which guard every batch against NaN and inf; a
TrainState (training/state.py), given one, checkpoints and resumes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from edge_svp.config import DataConfig, MemoryConfig, OptimConfig, TrainConfig
from edge_svp.data import Dataset, Preprocess
from edge_svp.memory.meter import MemoryMeter, set_host_allocator
from edge_svp.memory.planner import MemoryPlan
from edge_svp.progress import Reporter
from edge_svp.training.backprop import train_backprop
from edge_svp.training.common import TrainData, evaluate, resolve_device
from edge_svp.training.context import TrainContext
from edge_svp.training.joint import train_joint
from edge_svp.training.layerwise import train_layerwise
from edge_svp.training.planning import measure_network, network_probe, plan_training
from edge_svp.training.state import TrainState

SCHEDULES = {"joint": train_joint, "layerwise": train_layerwise}


def train(
    net,
    dataset: Dataset,
    train: TrainConfig | None = None,
    optim: OptimConfig | None = None,
    preprocess: Preprocess | None = None,
    reporter: Reporter | None = None,
    on_epoch: Callable[[list[dict]], None] | None = None,
    memory: MemoryConfig | None = None,
    plan: MemoryPlan | None = None,
    meter: MemoryMeter | None = None,
    state: TrainState | None = None,
) -> list[dict]:
    """Train `net` in place; returns one record per block per epoch (with `state` resumed
    from a checkpoint, those before it too). `reporter` shows progress (ConsoleReporter
    prints a line per epoch), `on_epoch` is called with each epoch's records."""
    train = train or TrainConfig()
    optim = optim or OptimConfig()
    memory = memory or MemoryConfig()
    defaults = DataConfig()
    preprocess = preprocess or Preprocess.fit(dataset.x_train, defaults.normalize, defaults.augment)
    device = resolve_device(train.device)
    if plan is None:
        plan = plan_training(net, dataset, preprocess, train, optim, memory)
    set_host_allocator(exact=plan.host_allocator == "exact")
    torch.manual_seed(train.seed)  # augmentation and dropout draws
    if train.schedule != "layerwise" or train.method == "bp":
        net.to(device)
    ctx = TrainContext(
        net, TrainData(dataset, preprocess, device), train, optim, memory, plan,
        reporter or Reporter(), on_epoch, meter or MemoryMeter(device), state or TrainState(train),
    )  # fmt: skip
    run = train_backprop if train.method == "bp" else SCHEDULES[train.schedule]
    run(ctx)
    return ctx.state.records


def block_accuracies(net, dataset: Dataset, preprocess: Preprocess, batch_size: int = 1000):
    """Test accuracy of every block's head, on the device the network is on."""
    device = next(net.parameters()).device
    return evaluate(net, TrainData(dataset, preprocess, device), batch_size)


__all__ = [
    "SCHEDULES",
    "TrainState",
    "block_accuracies",
    "measure_network",
    "network_probe",
    "plan_training",
    "train",
]
