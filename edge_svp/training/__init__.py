"""Training schedules: joint and layerwise SVP, and the backprop baseline.

    train(net, dataset)                       # SVP, joint schedule, defaults
    train(net, dataset, TrainConfig(schedule="layerwise", epochs=5))
    train(net, dataset, memory=MemoryConfig(budget="256MB"))

SVP schedules run as a MemoryPlan says (micro-batch, cache locations); without a budget
the plan keeps the whole batch and caches in host RAM. A TrainState (training/state.py)
guards every step against NaN and inf and, given one, checkpoints and resumes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from edge_svp.config import DataConfig, MemoryConfig, OptimConfig, TrainConfig
from edge_svp.data import Dataset, Preprocess
from edge_svp.memory import MemoryMeter, parse_size
from edge_svp.memory.planner import MemoryPlan, Probe, plan_blocks
from edge_svp.progress import Reporter
from edge_svp.target import Target, unified_memory
from edge_svp.training.backprop import train_backprop
from edge_svp.training.common import TrainData, evaluate, make_optimizer, resolve_device
from edge_svp.training.joint import train_joint
from edge_svp.training.layerwise import train_layerwise
from edge_svp.training.precision import autocast, check_precision
from edge_svp.training.state import TrainState

SCHEDULES = {"joint": train_joint, "layerwise": train_layerwise}


def network_probe(net, dataset: Dataset, preprocess: Preprocess, train, optim) -> Probe:
    """A Probe of `net`'s blocks (left untouched) on the training device, in the training
    precision, fed as training feeds them."""
    device = resolve_device(train.device)
    check_precision(train.precision, device)
    n = len(dataset.y_train)

    def first_input(m: int) -> torch.Tensor:  # real examples, through real preprocessing
        return preprocess(dataset.x_train[torch.randint(0, n, (m,))], train=True)

    def optimizer(params):
        return make_optimizer(params, optim)

    return Probe(net, optimizer, device, first_input, lambda: autocast(train.precision, device))


def measure_network(net, dataset: Dataset, preprocess: Preprocess, train, optim) -> list:
    """Each block's BlockCost, probed on the training device."""
    return network_probe(net, dataset, preprocess, train, optim).costs(train.batch_size)


# Plans made from interpolated costs are checked this many times by probing the chosen
# micro-batches (a plan that changes its mind is checked again).
PLAN_CHECKS = 3


def plan_training(
    net,
    dataset: Dataset,
    preprocess: Preprocess,
    train: TrainConfig,
    optim: OptimConfig,
    memory: MemoryConfig,
    costs: list | None = None,
    target: Target | None = None,
) -> MemoryPlan:
    """Probe each block of `net` (unless `costs` are given) and plan within memory.budget.

    The costs of micro-batches between the probed ones are interpolated; the micro-batches
    the plan picks are then probed too, and the plan made again, so that every block's
    predicted peak rests on a step measured at the micro-batch it will train with. With a
    `target`, the plan is for the target's device and memory (unified or not), from costs
    probed on this machine's training device."""
    probe = network_probe(net, dataset, preprocess, train, optim)
    costs = costs or probe.costs(train.batch_size)
    device = resolve_device(train.device)

    def make_plan() -> MemoryPlan:
        return plan_blocks(
            costs,
            train.schedule,
            target.device if target else device.type,
            train.batch_size,
            len(dataset.y_train) + len(dataset.y_test),
            budget=parse_size(memory.budget) if memory.budget else None,
            host_budget=parse_size(memory.host_budget) if memory.host_budget else None,
            cache_dtype=memory.cache_dtype,
            recompute=memory.recompute,
            input_projection_bytes=net.input_projection.weight.numel() * 4,
            unified=target.unified_memory if target else unified_memory(device),
        )

    plan = make_plan()
    for _ in range(PLAN_CHECKS):
        unmeasured = {b.block - 1: b.micro_batch for b in plan.blocks
                      if not costs[b.block - 1].measured_at(b.micro_batch)}  # fmt: skip
        if not unmeasured:
            break
        for i, m in unmeasured.items():
            costs[i].add_step(*probe.block(i, [m])[1][0])
        plan = make_plan()
    plan.precision, plan.probe_device = train.precision, device.type
    return plan


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
    from a checkpoint, those before it too)."""
    train = train or TrainConfig()
    optim = optim or OptimConfig()
    memory = memory or MemoryConfig()
    defaults = DataConfig()
    preprocess = preprocess or Preprocess.fit(dataset.x_train, defaults.normalize, defaults.augment)
    device = resolve_device(train.device)
    if train.method == "svp" and plan is None:
        plan = plan_training(net, dataset, preprocess, train, optim, memory)
    meter = meter or MemoryMeter(device)
    torch.manual_seed(train.seed)  # augmentation and dropout draws
    if train.schedule != "layerwise" or train.method == "bp":
        net.to(device)
    data = TrainData(dataset, preprocess, device)
    reporter = reporter or Reporter()
    state = state or TrainState(train)

    def collect(epoch_records: list[dict]) -> None:
        reporter.epoch(epoch_records)
        if on_epoch:
            on_epoch(epoch_records)
        state.end_epoch(epoch_records)

    run = train_backprop if train.method == "bp" else SCHEDULES[train.schedule]
    run(net, data, train, optim, reporter, collect, plan, meter, memory, state)
    return state.records


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
