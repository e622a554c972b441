"""A pipelined run's set-up. Rank 0's, shared with the other ranks through the rendezvous
store: the data loaded, the blocks probed and split into stages, the run directory opened (or,
for a resumed run, its checkpoint read and its stages kept). Then every rank's: its process
groups, its stage's data, its kernels warmed up (set_up_rank)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from edge_svp.config import RunConfig
from edge_svp.data import Preprocess, load_data
from edge_svp.distributed import SETUP_SECONDS
from edge_svp.distributed.failure import PeerFailure, first_line, set_resume_hint
from edge_svp.distributed.pipeline import keep_stage, stage_context, warm_up
from edge_svp.distributed.process_group import groups
from edge_svp.distributed.schedule import PIPELINED
from edge_svp.distributed.stages import Layout, StagePlan, assign_stages
from edge_svp.distributed.stream import peer_errors
from edge_svp.errors import EdgeSVPError
from edge_svp.memory.size import parse_size
from edge_svp.network import build_network
from edge_svp.progress import Reporter
from edge_svp.rundir import RunDir, RunHeader, default_run_dir
from edge_svp.training import measure_network
from edge_svp.training.backprop import has_batchnorm
from edge_svp.training.batches import TrainData

SETUP_KEY = "setup"


@dataclass
class RunPlace:
    """Where a pipelined run writes: a new directory (`out`, or a default name), or, with
    `resume`, the run directory `out` to go on with."""

    out: str | Path | None
    overwrite: bool = False
    resume: bool = False


def plan_pipeline(config, layout: Layout, device, where: RunPlace, reporter) -> tuple[dict, dict]:
    """Rank 0's set-up: (what every rank needs, what rank 0 keeps). A resumed run keeps the
    stages and micro-batch of its checkpoint; a new one is probed and split."""
    dataset, preprocess = load_data(config.data)
    probe = build_network(config, dataset.input_shape, dataset.num_classes)
    run_dir, checkpoint = open_run_dir(config, layout, where, reporter)
    if checkpoint:
        pipeline = checkpoint["training"]["pipeline"]
        shared, plans = pipeline["shared"], [StagePlan(**p) for p in pipeline["plans"]]
        preprocess = Preprocess(**checkpoint["preprocess"])
    else:
        shared, plans = split_pipeline(config, layout, device, dataset, preprocess, probe)
        if not where.resume:
            run_dir.create(config, where.overwrite)
    own = {"dataset": dataset, "preprocess": preprocess, "plans": plans, "run_dir": run_dir,
           "header": RunHeader.of(config, dataset, "torch", PIPELINED.name, probe),
           "batchnorm": [has_batchnorm(probe.blocks[p.first : p.stop]) for p in plans],
           "checkpoint": checkpoint, "layout": layout}  # fmt: skip
    shared["resumed_epoch"] = checkpoint["training"]["position"]["epoch"] if checkpoint else 0
    return shared, own


def open_run_dir(config, layout: Layout, where: RunPlace, reporter) -> tuple[RunDir, dict | None]:
    """The run directory, and a resumed run's checkpoint (None: a new run, or one that
    stopped before its first epoch ended and starts over)."""
    if not where.resume:
        run_dir = RunDir(where.out if where.out else default_run_dir(config, PIPELINED))
        run_dir.check_new(where.overwrite)
        return run_dir, None
    run_dir = RunDir(where.out)
    run_dir.lock()
    run_dir.remove_partial()
    checkpoint = run_dir.checkpoints.read(reporter.warning)
    run_dir.check_resumable(config, checkpoint, pipeline_layout(layout))
    return run_dir, checkpoint


def pipeline_layout(layout: Layout) -> dict:
    return {"processes": layout.world, "stages": layout.stages}


def split_pipeline(config, layout: Layout, device, dataset, preprocess, probe):
    """(what every rank needs, the StagePlans): the blocks probed and split into stages."""
    costs = measure_network(probe, dataset, preprocess, config.train, config.optim)
    # what a stage holds to make its first block's reference: R_0, or the previous objective
    reference_bytes = [sum(b.numel() * b.element_size() for b in probe.input_projection.buffers())]
    reference_bytes += [c.objective_bytes for c in costs[:-1]]
    budget = parse_size(config.memory.budget) if config.memory.budget else None
    plans, micro_batch = assign_stages(costs, layout.stages, device.type,
                                       config.train.batch_size, reference_bytes, budget)  # fmt: skip
    shared = {
        "stages": [[p.first, p.stop] for p in plans],
        "micro_batch": micro_batch,
        "budget": budget,  # per rank
        "block_inputs": [list(c.input_shape) for c in costs],  # what each stage receives
        "input_shape": list(dataset.input_shape),
        "num_classes": dataset.num_classes,
        "num_train": len(dataset.y_train),
        "num_test": len(dataset.y_test),
    }
    return shared, plans


def share_setup(store, rank: int, make) -> tuple[dict, dict]:
    """Rank 0 makes the set-up and puts it in the store; the others wait for it there."""
    if rank == 0:
        try:
            shared, own = make()
        except EdgeSVPError as e:
            store.set(SETUP_KEY, json.dumps({"error": str(e)}))
            raise
        store.set(SETUP_KEY, json.dumps(shared))
        return shared, own
    try:
        store.wait([SETUP_KEY], timedelta(seconds=SETUP_SECONDS))
        shared = json.loads(store.get(SETUP_KEY))
    except Exception as e:
        raise PeerFailure(0, f"rank 0 did not finish setting up ({first_line(e)})") from None
    if "error" in shared:
        raise PeerFailure(0, f"rank 0 failed: {shared['error']}")
    return shared, {}


@dataclass
class RankJob:
    """What a rank is to do, resolved: the run, its place in the pipeline, its device and
    the stream's backend (gloo or NCCL), the rendezvous store, where the run writes."""

    config: RunConfig
    rank: int
    layout: Layout
    device: torch.device
    comm: str
    store: object
    where: RunPlace
    timeout: float
    reporter: Reporter


def set_up_rank(job: RankJob):
    """(what every rank shares, what rank 0 keeps, this rank's StageContext, the gloo group
    of bookkeeping): rank 0's set-up shared, the process groups made, the stage's data
    loaded and its kernels warmed up; every rank leaves together."""
    config, rank, layout, device, comm = job.config, job.rank, job.layout, job.device, job.comm
    where, timeout, reporter = job.where, job.timeout, job.reporter
    shared, own = share_setup(job.store, rank, lambda: plan_pipeline(config, layout, device,
                                                                     where, reporter))  # fmt: skip
    stream, control, replica_group = groups(layout, rank, comm, timeout)
    if rank == 0:
        run_dir = own["run_dir"]
        set_resume_hint(run_dir.resume_command(pipeline_layout(layout)), run_dir.path)
        reporter.run_started(config, PIPELINED.label, "torch",
                             resume=str(run_dir) if where.resume else None)  # fmt: skip
        reporter.message(describe(layout, own["plans"], shared["micro_batch"], comm))
    ctx = stage_context(config, layout, rank, shared, (stream, replica_group), timeout, device)
    if layout.stage(rank) == 0:
        dataset, preprocess = (
            (own["dataset"], own["preprocess"]) if rank == 0 else load_data(config.data)
        )
        ctx.data = TrainData(dataset, preprocess, device)
    if rank != 0 or shared["resumed_epoch"]:  # a new run's rank 0 probed every kernel already
        probe = build_network(config, shared["input_shape"], shared["num_classes"])
        keep_stage(probe, ctx.first, ctx.stop, device)
        warm_up(ctx, probe, shared, config.optim)
        del probe
    with peer_errors(None, SETUP_SECONDS):  # set-up ends together: a slow warm-up is no hang
        dist.barrier()  # the default group, whose waits are set-up's
    return shared, own, ctx, control


def describe(layout: Layout, plans, micro_batch: int, comm: str) -> str:
    stages = " | ".join(p.blocks() for p in plans)
    return (f"pipeline: {layout.world} processes, {layout.stages} stage(s) of "
            f"{layout.replicas} replica(s): {stages}; micro-batch {micro_batch}, {comm}")  # fmt: skip
