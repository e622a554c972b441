"""Planning a run's memory from its own network and data: probe each block as training
feeds it (real examples through real preprocessing, in the training precision), plan
(edge_svp/memory/planner.py), then probe the micro-batches the plan picked and plan again."""

from __future__ import annotations

import torch

from edge_svp.config import MemoryConfig, OptimConfig, TrainConfig
from edge_svp.data import Dataset, Preprocess
from edge_svp.memory.meter import unified_memory
from edge_svp.memory.planner import MemoryPlan, plan_blocks
from edge_svp.memory.probe import Probe
from edge_svp.memory.size import parse_size
from edge_svp.training.common import make_optimizer, resolve_device
from edge_svp.training.precision import autocast, check_precision


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
    target=None,
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
