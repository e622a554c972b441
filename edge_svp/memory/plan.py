"""The memory planner: what each block costs, and a MemoryPlan that fits a budget.

Plain arithmetic on BlockCosts, which come from two sources:
  counted   parameter, gradient and buffer bytes, activation-cache bytes (numel x size)
  measured  the optimizer's state, and the peak of a training step at a few micro-batches
            (edge_svp/memory/probe.py); a micro-batch in between lies on the straight line
            through its measured neighbours.

From these, plan_layerwise / plan_joint pick for each block the largest micro-batch that
fits (gradient accumulation keeps the profile's batch), where the activation cache lives
(device, host RAM or disk) and what is resident, and predict each block's peak.
training.plan_training then probes the micro-batches a plan picked and plans again, so that
a prediction rests on a step measured at the micro-batch it is for. See docs/memory.md for
what a budget counts.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, field, replace

from edge_svp.errors import EdgeSVPError
from edge_svp.memory.size import format_bytes

# Batches a streaming cache holds on the training device outside the step: 2 queued, 1 that
# the prefetcher waits to queue, 1 in use (edge_svp/memory/activation_cache.py).
STREAM_BUFFERS = 4
# What a training run holds besides its blocks' steps, in the process's resident memory on
# CPU: thread stacks, Python objects, the loop's bookkeeping, checkpoint I/O. Seen at 0.7-1.9
# MiB on every layerwise block of the shipped profiles (bench/plan_accuracy.py); predicted at
# its middle. On CUDA the
# allocator counts tensors only, and the probe sees every kind of tensor a step makes.
RUNTIME_OVERHEAD = {"cpu": 1.6 * 2**20, "cuda": 0}
# What a plan keeps free between a predicted peak and the budget, for how far the overhead
# above varies on CPU: up to 4.6 MiB was seen (the CNN's joint run), 3 MiB over its middle.
PLAN_MARGIN = {"cpu": 3 * 2**20, "cuda": 0}
# How far one process's probe of a block can differ from another's on CPU, where steps are
# measured in resident memory: smallest budgets of 6.64-6.74 MB in five runs of one plan,
# 7.03-7.34 MB in three others. A smallest budget is quoted this much above the line, so
# that `fit`, probing again, accepts the number `plan` printed.
PROBE_SPREAD = {"cpu": 0.05, "cuda": 0.0}
BYTES = {"float32": 4, "float16": 2}
RENAMED_FIELDS = {"checkpointing": "recompute_activations"}  # of BlockPlan, in older plans
END_TO_END = "end-to-end"  # the schedule of a backprop plan: the whole network, one step


class BudgetTooSmall(EdgeSVPError):
    """No plan fits the budget; `min_budget` is the smallest that does."""

    def __init__(self, message: str, min_budget: int):
        super().__init__(message)
        self.min_budget = min_budget


@dataclass
class BlockCost:
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    param_bytes: int  # the block and its head: what trains, and the size of its gradients
    buffer_bytes: int  # BatchNorm statistics, the fixed projections
    optimizer_bytes: int  # measured: the optimizer's state, alive from step to step
    # measured: (micro-batch, the step's bytes at its peak: optimizer state, gradients,
    # activations, input and workspace), ascending by micro-batch
    steps: list[tuple[int, int]]
    objective_bytes: int = 0  # the whole objective: head and projections
    # what the next block's reference needs of the objective (LocalObjective.reference_parts:
    # R_l, and the head for posteriors); 0 in plans made before it was counted
    reference_bytes: int = 0
    # the optimizer steps inside backward: no gradients held between micro-batches, and a
    # micro-batch is the whole batch
    step_in_backward: bool = False

    def __post_init__(self):
        self.steps = sorted((int(m), int(b)) for m, b in self.steps)

    @property
    def block_bytes(self) -> int:
        """The block alone, without its objective (head, auxiliary layers, projections): what
        a frozen block holds when it runs again for the blocks after it. Plans made before
        objective_bytes was counted give the block with its objective."""
        return self.param_bytes + self.buffer_bytes - self.objective_bytes

    def measured_at(self, m: int) -> bool:
        return any(size == m for size, _ in self.steps)

    def add_step(self, m: int, step_bytes: int) -> None:
        self.steps = sorted([*self.steps, (m, step_bytes)])

    @property
    def gradient_bytes(self) -> int:
        """The gradients held from one micro-batch to the next."""
        return 0 if self.step_in_backward else self.param_bytes

    def micro_batches(self, batch_size: int) -> list[int]:
        """Candidate micro-batches, largest first."""
        return [batch_size] if self.step_in_backward else micro_batches(batch_size)

    def step_bytes(self, m: int) -> int:
        """A step's bytes at micro-batch m: as measured where it was, else on the straight line
        through the measured micro-batches on either side of m (outside them, the nearest two),
        and never below the optimizer state and gradients, which no micro-batch sheds."""
        floor = self.optimizer_bytes + self.gradient_bytes
        if len(self.steps) == 1:
            return max(self.steps[0][1], floor)
        k = min(
            max(bisect.bisect_left([size for size, _ in self.steps], m), 1), len(self.steps) - 1
        )
        (m0, b0), (m1, b1) = self.steps[k - 1], self.steps[k]
        return max(math.ceil(b0 + (b1 - b0) * (m - m0) / (m1 - m0)), floor)

    @property
    def example_bytes(self) -> float:
        """Bytes per example, from the smallest and the largest measured micro-batch."""
        (m0, b0), (m1, b1) = self.steps[0], self.steps[-1]
        return (b1 - b0) / (m1 - m0) if m1 > m0 else 0.0

    @property
    def input_example_bytes(self) -> int:
        return 4 * math.prod(self.input_shape)

    @property
    def output_example_bytes(self) -> int:
        return 4 * math.prod(self.output_shape)


@dataclass
class BlockPlan:
    block: int  # 1-based
    micro_batch: int
    accumulation: int  # micro-batches per optimizer step
    input_source: str  # data | device | host | disk | recompute
    output_cache: str | None  # where this block's outputs go for the next block
    resident_bytes: int  # parameters and buffers held in budgeted memory
    optimizer_bytes: int  # optimizer state held in budgeted memory
    gradient_bytes: int  # gradients held in budgeted memory
    activation_bytes: int  # a micro-batch's activations, input and workspace
    cache_bytes: int  # activation caches held in budgeted memory
    predicted_peak: int
    recompute_activations: bool = False  # backprop: activations recomputed in backward


@dataclass
class MemoryPlan:
    schedule: str | None  # the Schedule's name (training/schedule.py)
    device: str  # the device type the plan is for
    budget: int | None
    host_budget: int | None
    batch_size: int
    cache_dtype: str
    min_budget: int  # the smallest budget for which a plan exists (smallest_budget)
    blocks: list[BlockPlan] = field(default_factory=list)
    costs: list[BlockCost] = field(default_factory=list)
    unified_memory: bool = False  # host RAM is the device's memory (Jetson): host caches count
    precision: str = "fp32"  # the autocast the probe steps ran under
    probe_device: str = ""  # where the costs were measured, when not on `device`
    probed_on: str | None = None  # what the probe fed the first block, if not the real data
    margin: int = 0  # kept free between each predicted peak and the budget (PLAN_MARGIN)
    # CPU: whether training returns freed tensors to the OS ("exact", as the probe measured) or
    # keeps them for reuse ("reuse": faster, resident memory above the prediction)
    host_allocator: str = "exact"
    # the optimizer's memory levers the plan was made with (training/optim.py, OptimizerLevers)
    state_precision: str = "fp32"
    step_in_backward: bool = False
    state_on_host: bool = False  # in host RAM, stepped on the CPU (a GPU of its own)
    # the fixed projections svp.store_projection = auto leaves to the plan: held (True), or
    # drawn from their seeds at every use (False); None: the network has none
    projections_stored: bool | None = None

    @property
    def predicted_peak(self) -> int:
        return max(b.predicted_peak for b in self.blocks)

    @property
    def optimizer_memory(self) -> str:
        """How the optimizer holds its memory, in words."""
        return optimizer_memory(self.state_precision, self.step_in_backward, self.state_on_host)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["predicted_peak"] = self.predicted_peak
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> MemoryPlan:
        """The plan `to_dict` wrote (a resumed run follows its own plan, not a new one)."""
        raw = {k: v for k, v in raw.items() if k != "predicted_peak"}
        # a plan written before "checkpointing" was called recompute_activations
        blocks = [BlockPlan(**{RENAMED_FIELDS.get(k, k): v for k, v in b.items()})
                  for b in raw.pop("blocks")]  # fmt: skip
        costs = [
            BlockCost(**{**c, "input_shape": tuple(c["input_shape"]),
                         "output_shape": tuple(c["output_shape"])})
            for c in raw.pop("costs")
        ]  # fmt: skip
        return cls(**raw, blocks=blocks, costs=costs)

    def table(self) -> str:
        head = ["block", "params", "optimizer", "gradients", "activations", "micro-batch",
                "input", "caches", "predicted peak"]  # fmt: skip
        rows = [head]
        for b, c in zip(self.blocks, self.costs, strict=True):
            rows.append([
                f"1-{b.block}" if self.schedule == END_TO_END else str(b.block),
                format_bytes(c.param_bytes + c.buffer_bytes),
                format_bytes(b.optimizer_bytes),
                format_bytes(b.gradient_bytes),
                format_bytes(b.activation_bytes),
                f"{b.micro_batch} x {b.accumulation}" + (" (recomputed)" if b.recompute_activations else ""),
                b.input_source,
                format_bytes(b.cache_bytes) + (f" -> {b.output_cache}" if b.output_cache else ""),
                format_bytes(b.predicted_peak),
            ])  # fmt: skip
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        return "\n".join(
            "  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows
        )


# --- planning ---------------------------------------------------------------------------


def optimizer_memory(state_precision: str, step_in_backward: bool, state_on_host: bool) -> str:
    """How an optimizer holds its memory (training/optim.py's OptimizerLevers), in words."""
    where = " in host RAM" * state_on_host
    return f"{state_precision} state{where}" + ", step in backward" * step_in_backward


def micro_batches(batch_size: int) -> list[int]:
    """Candidate micro-batches, largest first: ceil(B / k) for k = 1, 2, ..."""
    return sorted({math.ceil(batch_size / k) for k in range(1, batch_size + 1)}, reverse=True)


def budgeted_memory(device_type: str, unified: bool = False) -> str:
    """Which memory a budget counts: the process's (CPU, unified memory) or CUDA's allocator."""
    return "cpu" if device_type == "cpu" or unified else device_type


def plan_margin(device_type: str, unified: bool = False) -> int:
    """What a plan keeps free between a predicted peak and the budget (PLAN_MARGIN)."""
    return int(PLAN_MARGIN[budgeted_memory(device_type, unified)])


def smallest_budget(peak: int, device_type: str, unified: bool = False) -> int:
    """The smallest budget to quote for a plan whose smallest predicted peak is `peak`: the
    plan's margin, and room for another probe's spread (PROBE_SPREAD)."""
    memory = budgeted_memory(device_type, unified)
    return math.ceil(peak * (1 + PROBE_SPREAD[memory])) + plan_margin(device_type, unified)


@dataclass
class _Setting:
    """Everything plan_layerwise needs besides the costs."""

    device_type: str
    budget: int | None
    host_budget: int | None
    batch_size: int
    num_examples: int  # train + test: the cache holds both splits
    cache_dtype: str
    recompute: bool
    input_projection_bytes: int
    unified: bool = False

    @property
    def host_counted(self) -> bool:
        """Is host RAM budgeted memory? On a CPU it is the device; on a unified-memory board
        (Jetson) the GPU's memory is the same RAM, so a "host" cache frees nothing."""
        return budgeted_memory(self.device_type, self.unified) == "cpu"

    @property
    def overhead(self) -> int:
        """What the run holds besides its steps (RUNTIME_OVERHEAD)."""
        return int(RUNTIME_OVERHEAD[budgeted_memory(self.device_type, self.unified)])

    @property
    def margin(self) -> int:
        return plan_margin(self.device_type, self.unified)

    def fits(self, peak: int) -> bool:
        return self.budget is None or peak + self.margin <= self.budget

    def counted(self, location: str | None) -> bool:
        """Does a cache at `location` sit in budgeted memory?"""
        if location in (None, "disk", "data", "recompute"):
            return False
        return location == "device" or self.host_counted


def _cache_bytes(cost: BlockCost, s: _Setting) -> int:
    return s.num_examples * math.prod(cost.output_shape) * BYTES[s.cache_dtype]


def _block_plan(i, costs, m, source, target, s: _Setting) -> BlockPlan:
    cost = costs[i]
    # the block and what makes its reference (the input projection, or R_{l-1} of the
    # objective before it); every other block waits on disk (edge_svp/memory/offload.py)
    resident = cost.param_bytes + cost.buffer_bytes
    if i:
        resident += costs[i - 1].reference_bytes or costs[i - 1].objective_bytes
    else:
        resident += s.input_projection_bytes
    if source == "recompute":  # the frozen blocks before it, not their objectives
        resident += sum(c.block_bytes for c in costs[:i])
    cache_in = _cache_bytes(costs[i - 1], s) if i and s.counted(source) else 0
    cache_out = _cache_bytes(cost, s) if s.counted(target) else 0
    streaming = source in ("host", "disk")
    stream = STREAM_BUFFERS * m * cost.input_example_bytes if streaming else 0
    if source == "recompute":  # the frozen prefix runs without autograd, one output at a time
        stream = 2 * m * max(c.output_example_bytes for c in costs[:i])
    step = cost.step_bytes(m)
    activations = max(step - cost.optimizer_bytes - cost.gradient_bytes, 0)
    resident += s.overhead
    train_peak = resident + step + cache_in + stream
    # writing the next cache: a forward pass, no gradients, the optimizer not yet let go
    cache_peak = resident + cost.optimizer_bytes + activations + cache_in + cache_out + stream
    return BlockPlan(
        block=i + 1,
        micro_batch=m,
        accumulation=math.ceil(s.batch_size / m),
        input_source=source,
        output_cache=target,
        resident_bytes=resident,
        optimizer_bytes=cost.optimizer_bytes,
        gradient_bytes=cost.gradient_bytes,
        activation_bytes=activations,
        cache_bytes=cache_in + cache_out,
        predicted_peak=max(train_peak, cache_peak) if target else train_peak,
    )


def _best(i, costs, source, target, s: _Setting) -> BlockPlan | None:
    """The plan with the largest micro-batch that fits, or None."""
    for m in costs[i].micro_batches(s.batch_size):
        plan = _block_plan(i, costs, m, source, target, s)
        if s.fits(plan.predicted_peak):
            return plan
    return None


def _locations(i, costs, s: _Setting) -> list[str]:
    """Where block i's output cache may go, cheapest to read first."""
    if s.unified:  # "host" is the same RAM as "device", and slower to read: never better
        options = ["device", "disk"]
    elif s.device_type == "cuda":
        options = ["device", "host", "disk"]
        if s.budget is None:
            options = options[-2:]  # no budget: spend no device memory on caches
    else:
        options = ["host", "disk"]
    if s.host_budget is not None and _cache_bytes(costs[i], s) > s.host_budget:
        options = [o for o in options if o != "host"]
    return options


def plan_layerwise(costs: list[BlockCost], s: _Setting) -> list[BlockPlan]:
    plans, source = [], "data"
    for i in range(len(costs)):
        last = i == len(costs) - 1
        if last or s.recompute:
            plan = _best(i, costs, source, None, s)
        else:
            # prefer the location that lets this block and the next keep the largest batch
            def score(loc, i=i, source=source):
                here = _best(i, costs, source, loc, s)
                after = _best(i + 1, costs, loc, None, s)
                return min(here.micro_batch if here else 0, after.micro_batch if after else 0)

            options = _locations(i, costs, s)
            best = max(options, key=lambda loc: (score(loc), -options.index(loc)))
            plan = _best(i, costs, source, best, s)
        if plan is None:
            return plans + [None]
        plans.append(plan)
        source = "recompute" if s.recompute else plan.output_cache
    return plans


def plan_joint(costs: list[BlockCost], s: _Setting) -> list[BlockPlan]:
    """All blocks resident; one block's graph alive at a time.

    Every block keeps its optimizer state, and its gradients while micro-batches accumulate;
    activations and workspace are only ever alive for one block at a time."""
    resident = sum(c.param_bytes + c.buffer_bytes for c in costs) + s.input_projection_bytes
    resident += s.overhead
    optimizers = sum(c.optimizer_bytes for c in costs)
    gradients = sum(c.gradient_bytes for c in costs)
    held = optimizers + gradients
    for m in costs[0].micro_batches(s.batch_size):
        peaks = [
            resident + held - c.optimizer_bytes - c.gradient_bytes + c.step_bytes(m) for c in costs
        ]
        if s.fits(max(peaks)):
            return [
                BlockPlan(i + 1, m, math.ceil(s.batch_size / m), "data" if i == 0 else "device",
                          None, resident, optimizers, gradients,
                          peaks[i] - resident - held, 0, peaks[i])
                for i, c in enumerate(costs)
            ]  # fmt: skip
    return [None]


def plan_blocks(
    costs: list[BlockCost],
    all_resident: bool,
    device_type: str,
    batch_size: int,
    num_examples: int,
    budget: int | None = None,
    host_budget: int | None = None,
    cache_dtype: str = "float32",
    recompute: bool = False,
    input_projection_bytes: int = 0,
    unified: bool = False,
) -> MemoryPlan:
    """A MemoryPlan of SVP's blocks, all resident at once (the joint schedule) or one after
    another (layerwise), or EdgeSVPError naming the block that cannot fit. Its `schedule`
    is for the caller to name."""
    s = _Setting(device_type, budget, host_budget, batch_size, num_examples, cache_dtype,
                 recompute, input_projection_bytes, unified)  # fmt: skip
    planner = plan_joint if all_resident else plan_layerwise
    smallest = min(costs[0].micro_batches(batch_size))  # 1, unless stepping in backward
    unlimited = replace(s, budget=None, batch_size=smallest)
    if all_resident or recompute:
        floor = planner(costs, unlimited)
    else:  # the smallest layerwise plan streams every cache from disk at micro-batch 1
        floor = [_block_plan(i, costs, smallest, "data" if i == 0 else "disk",
                             None if i == len(costs) - 1 else "disk", unlimited)
                 for i in range(len(costs))]  # fmt: skip
    min_budget = smallest_budget(max(p.predicted_peak for p in floor), device_type, unified)
    plans = planner(costs, s)
    if plans[-1] is None:
        raise infeasible(all_resident, costs, floor, min_budget, s)
    return MemoryPlan(None, device_type, budget, host_budget, batch_size, cache_dtype,
                      min_budget, plans, costs, unified, margin=s.margin)  # fmt: skip


def infeasible(all_resident, costs, floor, min_budget: int, s: _Setting) -> BudgetTooSmall:
    """Why no plan fits: the joint schedule's resident blocks, or the block that needs the
    most at micro-batch 1 (its predicted peak and the plan's margin)."""
    if all_resident:
        resident = floor[0].resident_bytes + sum(c.optimizer_bytes for c in costs)
        if resident > s.budget:
            return BudgetTooSmall(
                f"joint training keeps all {len(costs)} blocks and their optimizer states "
                f"resident ({format_bytes(resident)}), more than the budget "
                f"{format_bytes(s.budget)}; use --schedule layerwise, which holds one block",
                min_budget,
            )
    worst = max(floor, key=lambda p: p.predicted_peak)
    return BudgetTooSmall(
        f"block {worst.block} needs {format_bytes(min_budget)} at micro-batch "
        f"{worst.micro_batch}, more than the "
        f"budget {format_bytes(s.budget)}; the smallest budget that works is "
        f"{format_bytes(min_budget)}",
        min_budget,
    )


def plan_backprop(
    costs: dict[bool, BlockCost],
    device_type: str,
    batch_size: int,
    resident_bytes: int,
    budget: int | None = None,
    unified: bool = False,
    num_blocks: int = 1,
) -> MemoryPlan:
    """Backprop of the whole network as one step, costed with and without activation
    recomputed activations (`costs`, keyed by that; one of them when the choice is made already): the
    largest micro-batch that fits (gradient accumulation keeps the batch), recomputing
    activations only where that lets a larger micro-batch fit, or where nothing fits
    without it. `resident_bytes`: the network's parameters and buffers, all held throughout."""
    s = _Setting(device_type, budget, None, batch_size, 0, "float32", False, 0, unified)
    resident = resident_bytes + s.overhead

    def option(m: int, recompute: bool) -> BlockPlan:
        cost = costs[recompute]
        step = cost.step_bytes(m)
        return BlockPlan(
            block=num_blocks, micro_batch=m, accumulation=math.ceil(batch_size / m),
            input_source="data", output_cache=None, resident_bytes=resident,
            optimizer_bytes=cost.optimizer_bytes, gradient_bytes=cost.gradient_bytes,
            activation_bytes=max(step - cost.optimizer_bytes - cost.gradient_bytes, 0),
            cache_bytes=0, predicted_peak=resident + step, recompute_activations=recompute,
        )  # fmt: skip

    floor = min((option(min(costs[c].micro_batches(batch_size)), c) for c in costs),
                key=lambda p: p.predicted_peak)  # fmt: skip
    min_budget = smallest_budget(floor.predicted_peak, device_type, unified)
    best = None
    for recompute in sorted(costs):  # without recomputation first: it is faster
        fitting = (option(m, recompute) for m in costs[recompute].micro_batches(batch_size))
        plan = next((p for p in fitting if s.fits(p.predicted_peak)), None)
        if plan and (best is None or plan.micro_batch > best.micro_batch):
            best = plan
    if best is None:
        how = " recomputing activations" if floor.recompute_activations else ""
        raise BudgetTooSmall(
            f"backprop needs {format_bytes(min_budget)} at micro-batch {floor.micro_batch}{how}, "
            "more than the "
            f"budget {format_bytes(budget)}; the smallest budget that works for backprop is "
            f"{format_bytes(min_budget)}",
            min_budget,
        )
    return MemoryPlan(END_TO_END, device_type, budget, None, batch_size, "float32", min_budget,
                      [best], [costs[best.recompute_activations]], unified, margin=s.margin)  # fmt: skip
