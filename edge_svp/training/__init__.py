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
from edge_svp.device import resolve_device
from edge_svp.memory.meter import MemoryMeter, set_host_allocator
from edge_svp.memory.plan import MemoryPlan
from edge_svp.progress import Reporter
from edge_svp.training.backprop import Backprop
from edge_svp.training.batches import TrainData
from edge_svp.training.context import TrainContext
from edge_svp.training.evaluation import evaluate
from edge_svp.training.joint import Joint
from edge_svp.training.layerwise import Layerwise
from edge_svp.training.probe_plan import measure_network, network_probe, plan_training
from edge_svp.training.schedule import Schedule
from edge_svp.training.state import TrainState

# Every single-process schedule, by name; the pipeline's is edge_svp/distributed/schedule.py.
SCHEDULES: dict[str, Schedule] = {s.name: s for s in (Joint(), Layerwise(), Backprop())}


def schedule_named(name: str) -> Schedule:
    """The schedule a summary or plan names (Schedule.name)."""
    from edge_svp.distributed.schedule import PIPELINED  # the pipeline builds on these

    return {**SCHEDULES, PIPELINED.name: PIPELINED}[name]


def schedule_of(train: TrainConfig) -> Schedule:
    """The schedule a TrainConfig selects: backprop by its method, SVP's by its schedule."""
    if train.method == Backprop.method:
        return SCHEDULES[Backprop.name]
    return SCHEDULES[train.schedule]


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
    train.check_schedule()
    schedule = schedule_of(train)
    if plan is None:
        plan = plan_training(net, dataset, preprocess, train, optim, memory, reporter=reporter)
    if plan.projections_stored is not None:  # as the plan was made for (before net.to)
        net.store_projections(plan.projections_stored)
    set_host_allocator(exact=plan.host_allocator == "exact")
    torch.manual_seed(train.seed)  # augmentation and dropout draws
    if schedule.on_device_throughout():
        net.to(device)
    ctx = TrainContext(
        net, TrainData(dataset, preprocess, device), train, optim, memory, plan,
        reporter or Reporter(), on_epoch, meter or MemoryMeter(device, settle=plan.budget is not None),
        state or TrainState(train, per_block=schedule.per_block),
    )  # fmt: skip
    schedule.train(ctx)
    return ctx.state.records


def block_accuracies(net, dataset: Dataset, preprocess: Preprocess, batch_size: int = 1000):
    """Test accuracy of every block's head, on the device the network is on."""
    device = next(net.parameters()).device
    return evaluate(net, TrainData(dataset, preprocess, device), batch_size)


__all__ = [
    "SCHEDULES",
    "Schedule",
    "TrainState",
    "block_accuracies",
    "measure_network",
    "network_probe",
    "plan_training",
    "schedule_named",
    "schedule_of",
    "train",
]
