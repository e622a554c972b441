"""A rank in training: what it trains with (RankRun), one epoch of its stage with the report
rank 0 gathers, and a resumed rank's start from what rank 0 hands it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from edge_svp.config import RunConfig
from edge_svp.distributed.exchange import barrier, gather, on_cpu, resume_payloads
from edge_svp.distributed.pipeline import (
    StageContext,
    average_buffers,
    evaluate_stage,
    train_epoch,
)
from edge_svp.distributed.stages import Layout
from edge_svp.distributed.stream import peer_errors
from edge_svp.training.batches import MicroSteps
from edge_svp.training.state import rng_states, set_rng_states


@dataclass
class RankRun:
    """One rank's part of the run, as _fit sets it up."""

    config: RunConfig
    layout: Layout
    rank: int
    shared: dict
    control: object  # the gloo group of bookkeeping
    timeout: float
    order: torch.Generator  # the data order, the same on every rank
    stage: StageContext  # what it trains, and its links
    reporter: object  # edge_svp.progress.Reporter

    def gather(self, obj) -> list | None:
        return gather(obj, self.control, self.timeout, self.rank)


def train_rank_epoch(run: RankRun, epoch: int) -> list[dict] | None:
    """One epoch of this rank, then its test accuracy; every rank's report on rank 0."""
    ctx, trainers = run.stage, run.stage.trainers
    train, device = run.config.train, next(ctx.net.parameters()).device
    epoch_start = time.perf_counter()
    barrier(run.control, run.timeout)  # start the epoch's clock together
    train_start, cpu_start = time.perf_counter(), time.process_time()
    before = ctx.counters()
    steps = MicroSteps(run.shared["num_train"], train.batch_size, run.shared["micro_batch"],
                       run.order, ctx.replica, ctx.replicas)  # fmt: skip
    train_epoch(ctx, steps, run.reporter, epoch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - train_start
    # below `seconds` where the rank waited, or other work on the machine took its core
    cpu_seconds = time.process_time() - cpu_start
    during = {k: v - before[k] for k, v in ctx.counters().items()}  # training only
    if ctx.replicas > 1:
        average_buffers(ctx)
    eval_batch = min(train.eval_batch_size, run.shared["micro_batch"])
    correct = evaluate_stage(ctx, run.shared["num_test"], eval_batch)
    return run.gather({
        "blocks": list(ctx.owned),
        "replica": ctx.replica,
        "stats": [(t.stats.loss, t.stats.correct, t.stats.count) for t in trainers],
        "lrs": [t.lr for t in trainers],
        "test_correct": correct,
        "train_seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "epoch_start": epoch_start,
        # what this rank needs to go on from here (resume_rank)
        "trainers": [on_cpu(t.state_dict()) for t in trainers],
        "rng": rng_states(),
        "order": run.order.get_state(),
        "bad_batches": ctx.bad_batches,
        **during,
    })  # fmt: skip


def resume_rank(run: RankRun, checkpoint: dict | None) -> None:
    """Rank 0 hands every rank what its checkpoint holds for it (its stage's weights, its
    trainers' optimizers and schedules, its RNG states, the data order), and each goes on
    from there."""
    mine = [None]
    payloads = resume_payloads(checkpoint, run.layout, run.shared) if run.rank == 0 else None
    with peer_errors(0, run.timeout):
        dist.scatter_object_list(mine, payloads, src=0, group=run.control)
    (payload,) = mine
    ctx = run.stage
    device = next(ctx.net.parameters()).device
    ctx.net.load_state_dict({k: v.to(device) for k, v in payload["state"].items()}, strict=False)
    for trainer, state in zip(ctx.trainers, payload["trainers"], strict=True):
        trainer.load_state_dict(state)
    set_rng_states(payload["rng"])
    run.order.set_state(payload["order"])
    ctx.bad_batches = payload["bad_batches"]
