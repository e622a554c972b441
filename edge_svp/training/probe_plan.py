"""Planning a run's memory from its own network and data: probe each block as training
feeds it (real examples through real preprocessing, in the training precision), plan
(edge_svp/memory/plan.py), then probe the micro-batches the plan picked and plan again."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace

import torch

from edge_svp.config import MemoryConfig, OptimConfig, TrainConfig
from edge_svp.data import Dataset, Preprocess
from edge_svp.device import resolve_device
from edge_svp.errors import EdgeSVPError
from edge_svp.memory.meter import (
    frozen_heap,
    set_host_allocator,
    settle_interned_strings,
    unified_memory,
)
from edge_svp.memory.plan import (
    BlockCost,
    BlockPlan,
    BudgetTooSmall,
    MemoryPlan,
    optimizer_memory,
    plan_backprop,
    plan_blocks,
)
from edge_svp.memory.probe import Probe, probe_sizes, tensor_bytes
from edge_svp.memory.size import format_bytes, parse_size
from edge_svp.progress import Reporter
from edge_svp.training.backprop import backprop_step
from edge_svp.training.optim import (
    DEFAULT_LEVERS,
    OptimizerLevers,
    lever_options,
    make_optimizer,
    stepping_in_backward,
)
from edge_svp.training.precision import autocast, check_precision


def network_probe(net, dataset: Dataset, preprocess: Preprocess, train, optim,
                  levers: OptimizerLevers = DEFAULT_LEVERS, track=None) -> Probe:  # fmt: skip
    """A Probe of `net`'s blocks (left untouched) on the training device, in the training
    precision, fed as training feeds them, their optimizers holding memory as `levers` say;
    `track`: Probe's."""
    device = resolve_device(train.device)
    check_precision(train.precision, device)
    n = len(dataset.y_train)

    def first_input(m: int) -> torch.Tensor:  # real examples, through real preprocessing
        return preprocess(dataset.x_train[torch.randint(0, n, (m,))], train=True)

    def optimizer(params):
        return make_optimizer(params, optim, levers)

    return Probe(net, optimizer, device, first_input, lambda: autocast(train.precision, device),
                 stepping_in_backward if levers.step_in_backward else None, track)  # fmt: skip


def measure_network(net, dataset: Dataset, preprocess: Preprocess, train, optim) -> list:
    """Each block's BlockCost, probed on the training device."""
    probe = network_probe(net, dataset, preprocess, train, optim)
    return probe.costs(probe_sizes(train.batch_size))


def end_to_end_cost(net, probe: Probe, recompute: bool, sizes: list[int]) -> BlockCost:
    """The BlockCost of backprop's step through the whole network (its parameters and
    buffers, all of which the step trains or holds), probed at micro-batches `sizes`."""
    module, objective, params = backprop_step(net, recompute)

    def make_input(m: int):
        return probe.first_input(m).to(probe.device), None

    optimizer_bytes, steps = probe.measure(module, objective, params, make_input, sizes)
    return BlockCost(
        input_shape=tuple(net.input_shape),
        output_shape=(net.num_classes,),
        param_bytes=tensor_bytes(params),
        buffer_bytes=tensor_bytes(net.buffers()),
        optimizer_bytes=optimizer_bytes,
        steps=steps,
        step_in_backward=probe.stepping_in_backward is not None,
    )


# Plans made from interpolated costs are checked this many times by probing the chosen
# micro-batches (a plan that changes its mind is checked again).
PLAN_CHECKS = 3


def batchnorm_fits(plan):
    """BatchNorm cannot normalise one value per channel (a 1x1 map at micro-batch 1, as a
    CNN with many poolings gives small images): one line, with what to change."""

    @functools.wraps(plan)
    def checked(*args, **kwargs):
        try:
            return plan(*args, **kwargs)
        except ValueError as e:
            if "more than 1 value per channel" not in str(e):
                raise
            raise EdgeSVPError(
                "a BatchNorm layer gets a single value per channel (a 1x1 feature map at "
                "micro-batch 1): these images are too small for the model's poolings; use "
                "--set model.norm=group, fewer model.downsamples, or larger images"
            ) from None

    return checked


@dataclass
class Planner:
    """What every schedule's plan is made from (Schedule.plan calls plan_svp or
    plan_end_to_end): the probe of the network, the settings, and the device planned for."""

    probe: Probe
    dataset: Dataset
    preprocess: Preprocess
    train: TrainConfig
    optim: OptimConfig
    memory: MemoryConfig
    device_type: str
    unified: bool
    levers: OptimizerLevers = DEFAULT_LEVERS  # what the probe's optimizers hold
    # probe only the micro-batch the smallest budget is quoted at (smallest_budget)
    floor_only: bool = False

    def with_levers(self, levers: OptimizerLevers) -> Planner:
        """This planner, probing optimizers that hold memory as `levers` say."""
        if levers == self.levers:
            return self
        probe = network_probe(self.probe.net, self.dataset, self.preprocess, self.train,
                              self.optim, levers, self.probe.track)  # fmt: skip
        return replace(self, probe=probe, levers=levers)

    @property
    def budget(self) -> int | None:
        return parse_size(self.memory.budget) if self.memory.budget else None

    def smallest_budget(self, schedule, net) -> int:
        """The smallest budget of `schedule` on `net`, from probes of the one micro-batch it
        rests on (a plan's min_budget): a fraction of a whole plan's probing, where only
        the smallest budget of an option is wanted."""
        try:
            return schedule.plan(replace(self, floor_only=True), net).min_budget
        except BudgetTooSmall as e:
            return e.min_budget

    def probing(self, net) -> str:
        """The progress bar's label: what the probe's steps hold (a plan probes each lever
        option in turn)."""
        drawn = any(not p.stored for p in net.adjustable_projections())
        levers = optimizer_memory(**asdict(self.levers))
        return f"probing ({levers}{', projections drawn' * drawn})"

    def probe_sizes(self) -> list[int]:
        """The micro-batches to probe: around every one a plan may pick, or (floor_only) the
        one the smallest budget is quoted at: 1, or the whole batch where the optimizer steps
        in backward (one micro-batch per batch)."""
        if self.floor_only:
            return [self.train.batch_size if self.levers.step_in_backward else 1]
        return probe_sizes(self.train.batch_size)

    def plan_svp(self, net, all_resident: bool) -> MemoryPlan:
        """SVP's blocks, all resident at once (joint) or one after another (layerwise)."""
        costs = self.probe.costs(self.probe_sizes(), self.probing(net))
        memory = self.memory

        def make_plan() -> MemoryPlan:
            return plan_blocks(
                costs,
                all_resident,
                self.device_type,
                self.train.batch_size,
                len(self.dataset.y_train) + len(self.dataset.y_test),
                budget=self.budget,
                host_budget=parse_size(memory.host_budget) if memory.host_budget else None,
                cache_dtype=memory.cache_dtype,
                recompute=memory.recompute,
                input_projection_bytes=tensor_bytes(net.input_projection.buffers()),
                unified=self.unified,
            )

        def measure(block: BlockPlan) -> int:
            return self.probe.block(block.block - 1, [block.micro_batch])[1][0][1]

        if self.floor_only:  # its min_budget is measured; the micro-batches it picked are not
            return make_plan()
        return _checked(make_plan, lambda b: costs[b.block - 1], measure)

    def plan_end_to_end(self, net) -> MemoryPlan:
        """Backprop's step through the whole network, with and without activation
        recomputed activations; refused with what SVP layerwise would need, where nothing fits."""
        train, probe, budget = self.train, self.probe, self.budget
        # recompute only if asked to, or if a budget may need it
        choices = [True] if train.recompute_activations else [False, True] if budget else [False]
        costs = {c: end_to_end_cost(net, probe, c, self.probe_sizes()) for c in choices}
        resident = tensor_bytes(net.parameters()) + tensor_bytes(net.buffers())

        def make_plan() -> MemoryPlan:
            return plan_backprop(costs, self.device_type, train.batch_size, resident, budget,
                                 self.unified, num_blocks=len(net))  # fmt: skip

        def measure(block: BlockPlan) -> int:
            return end_to_end_cost(
                net, probe, block.recompute_activations, [block.micro_batch]
            ).steps[0][1]

        if self.floor_only:
            return make_plan()
        return _checked(make_plan, lambda b: costs[b.recompute_activations], measure)

    def svp_floor(self, net) -> int:
        """The smallest budget of SVP layerwise on `net`'s blocks (what a refusal of backprop
        names instead), with the levers of this planner's optimizers and without the fixed
        projections that svp.store_projection = auto lets go."""
        svp_net = net.svp_counterpart() if net.classifier is not None else net
        svp_net.store_projections(False)  # where svp.store_projection = auto lets them go
        probe = network_probe(svp_net, self.dataset, self.preprocess, self.train, self.optim,
                              self.levers, self.probe.track)  # fmt: skip
        svp = replace(self, probe=probe, memory=MemoryConfig(), floor_only=True)
        return svp.plan_svp(svp_net, all_resident=False).min_budget


@batchnorm_fits
@frozen_heap()  # a meter per probe, each collecting the garbage of the one before
def plan_training(
    net,
    dataset: Dataset,
    preprocess: Preprocess,
    train: TrainConfig,
    optim: OptimConfig,
    memory: MemoryConfig,
    target=None,
    every_lever: bool = False,
    reporter: Reporter | None = None,
) -> MemoryPlan:
    """Probe `net` as its schedule trains it and plan within memory.budget (SVP's blocks, or
    backprop's step through the whole network).

    The costs of micro-batches between the probed ones are interpolated; the micro-batches
    the plan picks are then probed too, and the plan made again, so that every predicted
    peak rests on a step measured at the micro-batch it will train with. Under a budget the
    optimizer's memory levers are reached for only where the budget needs them
    (_with_levers), and after them the last lever: the fixed projections that
    svp.store_projection = auto leaves to the plan, drawn from their seeds at every use
    instead of held (arithmetic at every step). `net` is left with its projections as the
    plan has them. With `every_lever`, all of them are planned, so that min_budget is the
    smallest with any of them. With a `target`, the plan is for the target's device and
    memory (unified or not), from costs probed on this machine's training device. A
    `reporter` shows the probing's progress."""
    from edge_svp.training import schedule_of

    set_host_allocator(exact=True)  # a probe measures the memory that is alive
    settle_interned_strings()  # and no rebuild of Python's own tables in its steps
    probe = network_probe(net, dataset, preprocess, train, optim,
                          track=reporter.probing if reporter else None)  # fmt: skip
    device = resolve_device(train.device)
    planner = Planner(probe, dataset, preprocess, train, optim, memory,
                      device_type=target.device if target else device.type,
                      unified=target.unified_memory if target else unified_memory(device))  # fmt: skip
    schedule = schedule_of(train)
    discrete_gpu = device.type == "cuda" and not planner.unified
    budgeted = planner.budget is not None
    options = lever_options(optim, budgeted, train.precision, discrete_gpu)
    adjustable = bool(net.adjustable_projections())
    stored = ([True, False] if budgeted else [True]) if adjustable else [None]
    choices = [(levers, keep) for keep in stored for levers in options]

    def planner_with(levers: OptimizerLevers, keep: bool | None) -> Planner:
        if keep is not None:
            net.store_projections(keep)  # the probe measures the network as it is
        return planner.with_levers(levers)

    def plan_with(levers: OptimizerLevers, keep: bool | None) -> MemoryPlan:
        return schedule.plan(planner_with(levers, keep), net)

    def smallest_budget_with(levers: OptimizerLevers, keep: bool | None) -> int:
        return planner_with(levers, keep).smallest_budget(schedule, net)

    try:
        plan = _with_levers(choices, plan_with, smallest_budget_with if every_lever else None)
    except BudgetTooSmall as e:
        if schedule.local:
            raise
        # the user's choice: say what SVP would need, its optimizer state as compact
        svp_floor = planner.with_levers(OptimizerLevers(options[-1].state_precision)).svp_floor(net)
        raise BudgetTooSmall(
            f"{e}; SVP layerwise trains this profile from {format_bytes(svp_floor)} "
            "(--method svp --schedule layerwise)",
            e.min_budget,
        ) from None
    if adjustable:
        net.store_projections(plan.projections_stored)
    plan.schedule = schedule.name
    plan.precision, plan.probe_device = train.precision, device.type
    plan.host_allocator = host_allocator(memory, budgeted)
    return plan


def _with_levers(options: list[tuple], plan_with, smallest_budget_with=None) -> MemoryPlan:
    """The plan (plan_with(*option)) under the first of `options`, in the order they are
    preferred, that trains every block at the whole batch; failing that, the one whose
    smallest micro-batch is largest (the earlier on a tie). If none fits: the refusal that
    quotes the smallest budget. An option is (OptimizerLevers, whether the adjustable fixed
    projections are held).

    The options after the chosen one are left out, unless `smallest_budget_with` (option ->
    its smallest budget) is given: then the plan's min_budget is the smallest of all of them
    (what `edge-svp plan` quotes), else its own."""
    plans, refusals, floors = [], [], []
    for levers, keep in options:
        if any(map(_whole_batch, plans)):  # chosen: the rest could only quote a lower floor
            if smallest_budget_with is None:
                break
            floors.append(smallest_budget_with(levers, keep))
            continue
        try:
            plan = plan_with(levers, keep)
        except BudgetTooSmall as e:
            refusals.append(e)
            continue
        for lever, value in asdict(levers).items():  # MemoryPlan's fields of the same names
            setattr(plan, lever, value)
        plan.projections_stored = keep
        plans.append(plan)
    if not plans:
        raise min(refusals, key=lambda e: e.min_budget)
    whole = [p for p in plans if _whole_batch(p)]
    best = whole[0] if whole else max(plans, key=_smallest_micro_batch)  # max: the first of ties
    best.min_budget = min([p.min_budget for p in plans] + [e.min_budget for e in refusals] + floors)
    return best


def _whole_batch(plan: MemoryPlan) -> bool:
    return all(b.accumulation == 1 for b in plan.blocks)


def _smallest_micro_batch(plan: MemoryPlan) -> int:
    return min(b.micro_batch for b in plan.blocks)


def host_allocator(memory: MemoryConfig, budgeted: bool) -> str:
    """How training treats freed host memory: returned at once where a budget has to hold,
    otherwise kept for reuse (memory.host_allocator: auto | exact | reuse)."""
    if memory.host_allocator == "auto":
        return "exact" if budgeted else "reuse"
    return memory.host_allocator


def _checked(make_plan, cost_of, measure) -> MemoryPlan:
    """make_plan(), made again after probing each micro-batch it picked that its cost
    (cost_of(block plan)) only interpolated (measure(block plan) -> the step's bytes)."""
    plan = make_plan()
    for _ in range(PLAN_CHECKS):
        unmeasured = [b for b in plan.blocks if not cost_of(b).measured_at(b.micro_batch)]
        if not unmeasured:
            break
        for b in unmeasured:
            cost_of(b).add_step(b.micro_batch, measure(b))
        plan = make_plan()
    return plan
