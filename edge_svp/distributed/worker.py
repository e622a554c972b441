"""One rank of a pipelined fit, started by the local launcher or by torchrun.

    rendezvous (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from the environment)
    rank 0: load data, probe the blocks, assign stages, create the run directory; tell the
            others through the rendezvous store
    every rank: build the network from the seed, keep its stage, train it epoch by epoch
    every epoch: rank 0 gathers statistics, the stages' weights and every rank's training
            state (optimizers, schedules, RNG), writes metrics.jsonl and one merged
            checkpoint.pt, the same files a single-process fit writes
    the end: rank 0 writes summary.json

A run resumed (`fit --resume RUN --nproc N`) goes on from the end of its last checkpointed
epoch: rank 0 reads the checkpoint and hands each rank its stage's weights and its own
training state; the stages, micro-batch and data order are the checkpoint's.

Set-up (joining, loading data, probing) may take up to SETUP_SECONDS; after it, any wait for
another rank ends after `timeout` seconds. Failures are reported as failure.py says.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from edge_svp.config import RunConfig
from edge_svp.distributed import DEFAULT_TIMEOUT
from edge_svp.distributed.exchange import barrier, collect_states
from edge_svp.distributed.failure import (
    PeerFailure,
    first_line,
    note,
    report,
    stop_on_sigterm,
)
from edge_svp.distributed.pipeline import (
    keep_stage,
    stage_trainers,
)
from edge_svp.distributed.process_group import join, rank_device
from edge_svp.distributed.rank_training import RankRun, resume_rank, train_rank_epoch
from edge_svp.distributed.run_writer import RunWriter
from edge_svp.distributed.schedule import PIPELINED
from edge_svp.distributed.setup import (
    RankJob,
    RunPlace,
    set_up_rank,
)
from edge_svp.distributed.stages import Layout
from edge_svp.errors import EdgeSVPError, Interrupted
from edge_svp.memory.meter import (
    MemoryMeter,
    cap_device_memory,
    set_host_allocator,
)
from edge_svp.network import build_network
from edge_svp.progress import Reporter
from edge_svp.training.probe_plan import host_allocator


def fit_rank(
    config: RunConfig,
    out: str | Path | None = None,
    overwrite: bool = False,
    stages: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    reporter: Reporter | None = None,
    backend: str = "torch",
    resume: bool = False,
) -> dict | None:
    """Run this process's rank; rank 0 returns the summary, the others None. With
    `resume`, `out` is a run directory to go on with. A rank that fails, or whose peer
    fails, says so and exits (failure.py)."""
    set_host_allocator(exact=True)  # before any thread or matrix product, as fit does
    rank = int(os.environ["RANK"])
    store = None
    stop_on_sigterm(f"rank {rank}")
    try:
        PIPELINED.check(config, backend)
        layout = Layout(int(os.environ["WORLD_SIZE"]), stages or int(os.environ["WORLD_SIZE"]))
        device, comm = rank_device(config.train.device)
        store = join(rank, layout.world, timeout)
        job = RankJob(config, rank, layout, device, comm, store, RunPlace(out, overwrite, resume),
                      timeout, reporter or Reporter())  # fmt: skip
        return _fit(job)
    except Interrupted as e:
        code = report(rank, "signal", str(e))
    except EdgeSVPError as e:
        code = report(rank, "input", str(e), store=store)
    except PeerFailure as e:
        code = report(rank, "peer", note(store) or str(e), e.peer)
    except Exception as e:
        traceback.print_exc()
        code = report(rank, "error", f"{type(e).__name__}: {first_line(e)}", store=store)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # without waiting on process-group teardown, which may wait on the dead


def _fit(job: RankJob):
    config, rank, layout, device, comm = job.config, job.rank, job.layout, job.device, job.comm
    timeout, reporter = job.timeout, job.reporter
    start = time.perf_counter()
    shared, own, ctx, control = set_up_rank(job)
    allocator = host_allocator(config.memory, budgeted=shared["budget"] is not None)
    set_host_allocator(exact=allocator == "exact")  # after the probe, as training.train does
    meter = MemoryMeter(device)  # baseline: after imports, data and set-up
    if device.type == "cuda" and shared["budget"]:
        cap_device_memory(device, shared["budget"])  # an overrun fails fast, as in one process
    net = build_network(config, shared["input_shape"], shared["num_classes"])
    shapes = {k: (v.shape, v.dtype) for k, v in net.state_dict().items()}  # the whole network's
    keep_stage(net, ctx.first, ctx.stop, device)
    train = config.train
    ctx.net = net
    ctx.trainers = stage_trainers(ctx, config.optim, -(-shared["num_train"] // train.batch_size),
                                  train)  # fmt: skip
    run = RankRun(config, layout, rank, shared, control, timeout,
                  torch.Generator().manual_seed(train.seed), ctx, reporter)  # fmt: skip
    torch.manual_seed(train.seed + rank)  # augmentation and dropout draws
    if shared["resumed_epoch"]:
        resume_rank(run, own.get("checkpoint"))
    writer = RunWriter(config, own, reporter, start) if rank == 0 else None
    with meter.section():
        for epoch in range(shared["resumed_epoch"] + 1, train.epochs + 1):
            reports = train_rank_epoch(run, epoch)
            states = collect_states(net, layout, rank, shared["stages"], shapes, control, timeout)
            if writer:
                writer.epoch(epoch, reports, states, shared)
            del states  # the other stages' weights go once written, not at the next epoch
    final = run.gather({
        "rank": rank, "stage": layout.stage(rank), "replica": ctx.replica,
        "measured_peak": meter.peaks[0], "baseline": meter.baseline,
        "bad_batches": ctx.bad_batches,
        "peak_memory": meter.process_peak(),
    })  # fmt: skip
    summary = writer.summary(final, layout, comm, shared, timeout, device) if writer else None
    barrier(control, timeout)  # no rank leaves while another still needs it
    dist.destroy_process_group()
    return summary
