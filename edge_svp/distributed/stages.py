"""Which rank trains which blocks.

A pipeline stage is a contiguous run of blocks. The runs are chosen to balance the planner's
per-block costs (edge_svp/memory/plan.py): each candidate stage is planned as a joint run
of its blocks on one rank, and the split minimises the largest predicted peak. With a
per-rank budget, every stage then trains at the largest micro-batch that keeps every rank
within it (one micro-batch for the whole pipeline, so that what one stage sends is what the
next expects).

Ranks are laid out stage-major: the data-parallel replicas of a stage are consecutive ranks,
and replica r of one stage feeds replica r of the next.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from edge_svp.errors import EdgeSVPError
from edge_svp.memory.plan import (
    BlockCost,
    micro_batches,
    plan_blocks,
    plan_margin,
    smallest_budget,
)
from edge_svp.memory.size import format_bytes

IN_FLIGHT = 2  # outputs a stage may have on their way to the next one before it waits
LABEL_BYTES = 8  # int64 class ids travel with the activations


@dataclass(frozen=True)
class Layout:
    """`world` ranks as `stages` stages of `replicas` data-parallel replicas each."""

    world: int
    stages: int

    def __post_init__(self):
        if self.stages < 1 or self.world % self.stages:
            raise EdgeSVPError(
                f"{self.world} processes cannot form {self.stages} stages of equal size; "
                f"--stages must divide --nproc"
            )

    @property
    def replicas(self) -> int:
        return self.world // self.stages

    def stage(self, rank: int) -> int:
        return rank // self.replicas

    def replica(self, rank: int) -> int:
        return rank % self.replicas

    def rank(self, stage: int, replica: int) -> int:
        return stage * self.replicas + replica

    def stage_ranks(self, stage: int) -> list[int]:
        return [self.rank(stage, r) for r in range(self.replicas)]


@dataclass
class StagePlan:
    first: int  # 0-based index of the stage's first block
    stop: int  # one past its last block
    predicted_peak: int  # bytes, at the pipeline's micro-batch
    min_budget: int  # the smallest per-rank budget this stage fits, at micro-batch 1

    def blocks(self) -> str:
        """The stage's blocks, 1-based, as people count them."""
        a, b = self.first + 1, self.stop
        return f"block {a}" if a == b else f"blocks {a}-{b}"


def stream_bytes(costs: list[BlockCost], first: int, stop: int, m: int) -> int:
    """Buffers a stage holds for the pipeline besides its training step: the next input,
    received while this one trains, and the outputs still on their way."""
    receive = m * (costs[first].input_example_bytes + LABEL_BYTES) if first else 0
    send = IN_FLIGHT * m * (costs[stop - 1].output_example_bytes + LABEL_BYTES)
    return receive + (send if stop < len(costs) else 0)


def stage_peak(costs, first, stop, m, device_type, reference_bytes) -> int:
    """Predicted peak of one rank training blocks first..stop-1 at micro-batch m.

    `reference_bytes[first]` is what the stage holds to make its first block's reference
    v: the input projection R_0 for the first stage, else the previous block's projection.
    The first stage's rank also receives every other stage's weights and optimizer state
    after each epoch, to write the checkpoint (the state arrives pickled, then unpickled:
    twice its size at the most)."""
    stage = costs[first:stop]
    plan = plan_blocks(stage, True, device_type, m, m,
                       input_projection_bytes=reference_bytes[first])  # fmt: skip
    training = plan.predicted_peak + stream_bytes(costs, first, stop, m)
    if first:
        return training
    others = sum(c.param_bytes + c.buffer_bytes + 2 * c.optimizer_bytes for c in costs[stop:])
    checkpoint = plan.blocks[0].resident_bytes + sum(c.optimizer_bytes for c in stage) + others
    return max(training, checkpoint)


def split_blocks(num_blocks: int, stages: int, cost) -> list[tuple[int, int]]:
    """Contiguous (first, stop) runs, one per stage, minimising the largest cost(first, stop)."""
    if stages > num_blocks:
        raise EdgeSVPError(f"cannot place {num_blocks} blocks on {stages} stages; use --stages "
                           f"{num_blocks} or fewer")  # fmt: skip
    # best[k, j]: (the smallest largest cost placing blocks[:j] on k stages, where stage k starts)
    best = {(0, 0): (0, 0)}
    for k in range(1, stages + 1):
        for j in range(k, num_blocks - (stages - k) + 1):
            best[k, j] = min(
                (max(best[k - 1, i][0], cost(i, j)), i)
                for i in range(k - 1, j)
                if (k - 1, i) in best
            )
    runs, j = [], num_blocks
    for k in range(stages, 0, -1):
        i = best[k, j][1]
        runs.append((i, j))
        j = i
    return runs[::-1]


def assign_stages(
    costs: list[BlockCost],
    stages: int,
    device_type: str,
    batch_size: int,
    reference_bytes: list[int],
    budget: int | None = None,
) -> tuple[list[StagePlan], int]:
    """The stages (balanced at the full batch) and the pipeline's micro-batch under `budget`."""
    peak = functools.cache(lambda a, b, m: stage_peak(costs, a, b, m, device_type, reference_bytes))
    margin = plan_margin(device_type)  # kept free below the budget, as plan_blocks does
    runs = split_blocks(len(costs), stages, lambda a, b: peak(a, b, batch_size))
    micro_batch = next(
        (m for m in micro_batches(batch_size)
         if budget is None or all(peak(a, b, m) + margin <= budget for a, b in runs)),
        None,
    )  # fmt: skip
    plans = [StagePlan(a, b, peak(a, b, micro_batch or 1),
                       smallest_budget(peak(a, b, 1), device_type)) for a, b in runs]  # fmt: skip
    if micro_batch is None:
        worst = max(plans, key=lambda p: p.min_budget)
        raise EdgeSVPError(
            f"stage {plans.index(worst) + 1} ({worst.blocks()}) needs "
            f"{format_bytes(worst.min_budget)} at micro-batch 1, more than the per-rank budget "
            f"{format_bytes(budget)}; give each rank that much, or use more stages"
        )
    return plans, micro_batch
