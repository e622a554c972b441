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

import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from edge_svp.config import RunConfig
from edge_svp.data import Preprocess, load_data
from edge_svp.device import resolve_device
from edge_svp.distributed import DEFAULT_TIMEOUT
from edge_svp.distributed.failure import (
    PeerFailure,
    note,
    report,
    set_resume_hint,
    stop_on_sigterm,
)
from edge_svp.distributed.pipeline import (
    StageContext,
    average_buffers,
    evaluate_stage,
    in_stage,
    keep_stage,
    merge_states,
    stage_state,
    stage_trainers,
    train_epoch,
    warm_up,
)
from edge_svp.distributed.schedule import PIPELINED
from edge_svp.distributed.stages import Layout, StagePlan, assign_stages
from edge_svp.distributed.stream import Inbox, Outbox, peer_errors
from edge_svp.errors import EdgeSVPError, Interrupted
from edge_svp.faults import rank_fault
from edge_svp.memory.meter import (
    MemoryMeter,
    cap_device_memory,
    set_host_allocator,
)
from edge_svp.memory.size import parse_size
from edge_svp.network import build_network
from edge_svp.progress import Reporter
from edge_svp.rundir import (
    MemorySummary,
    RunDir,
    RunHeader,
    RunSummary,
    checkpoint_contents,
    default_run_dir,
    memory_kind,
)
from edge_svp.training import measure_network
from edge_svp.training.backprop import has_batchnorm
from edge_svp.training.batches import MicroSteps, TrainData
from edge_svp.training.probe_plan import host_allocator
from edge_svp.training.state import rng_states, set_rng_states
from edge_svp.training.step import BatchStats

SETUP_SECONDS = 600
SETUP_KEY = "setup"


def first_line(e: Exception) -> str:
    return (str(e).splitlines() or [""])[0]


def rank_device(name: str) -> tuple[torch.device, str]:
    """This rank's device and the communication backend of its stream: NCCL on a GPU of its
    own, else gloo."""
    device = resolve_device(name)
    if device.type != "cuda":
        return device, "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    count = torch.cuda.device_count()
    if local_world > count:
        raise EdgeSVPError(
            f"NCCL needs a GPU for each process: {local_world} processes on this machine, "
            f"{count} GPU(s); use fewer processes, or --device cpu (gloo)"
        )
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device, "nccl"


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
        where = RunPlace(out, overwrite, resume)
        return _fit(config, rank, layout, device, comm, store, where, timeout,
                    reporter or Reporter())  # fmt: skip
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


def join(rank: int, world: int, timeout: float):
    """Join the process group; returns the store this run's ranks share."""
    setup = timedelta(seconds=max(SETUP_SECONDS, timeout))
    store, rank, world = next(dist.rendezvous("env://", rank, world, timeout=setup))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=setup)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # torchrun may restart a run
    return dist.PrefixStore(f"edge_svp/{attempt}", store)


def groups(layout: Layout, rank: int, comm: str, timeout: float):
    """(stream, control, replicas): point-to-point on `comm` (gloo or NCCL), bookkeeping on
    gloo, and the stage's replicas (None without replicas), each with `timeout`."""
    limit = timedelta(seconds=timeout)
    stream = dist.new_group(backend=comm, timeout=limit)
    control = dist.new_group(backend="gloo", timeout=limit)
    replicas = None
    if layout.replicas > 1:  # every rank creates every group, in the same order
        for s in range(layout.stages):
            group = dist.new_group(layout.stage_ranks(s), backend=comm, timeout=limit)
            replicas = group if s == layout.stage(rank) else replicas
    return stream, control, replicas


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


def gather(obj, control, timeout: float, rank: int) -> list | None:
    """gather_object to rank 0; like every wait, it ends after the timeout."""
    out = [None] * dist.get_world_size(control) if rank == 0 else None
    with peer_errors(None, timeout):
        dist.gather_object(obj, out, dst=0, group=control)
    return out


def barrier(control, timeout: float) -> None:
    with peer_errors(None, timeout):
        dist.barrier(group=control)


def collect_states(net, layout, rank, stages, shapes, control, timeout) -> dict | None:
    """Rank 0 receives the first replica's weights of every other stage, tensor by tensor into
    tensors of known shapes (no copies beyond the weights themselves); returns the whole
    network's state dict on rank 0, None elsewhere."""
    first, stop = stages[layout.stage(rank)]
    if rank and layout.replica(rank) == 0:
        with peer_errors(0, timeout):
            for tensor in stage_state(net, first, stop).values():
                dist.send(tensor.contiguous(), 0, group=control)
    if rank:
        return None
    parts = [stage_state(net, first, stop)]
    for s, (a, b) in enumerate(stages[1:], start=1):
        source, part = layout.rank(s, 0), {}
        with peer_errors(source, timeout):
            for name, (shape, dtype) in shapes.items():
                if in_stage(name, a, b):
                    part[name] = torch.empty(shape, dtype=dtype)
                    dist.recv(part[name], source, group=control)
        parts.append(part)
    return merge_states(parts)


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

    def gather(self, obj) -> list | None:
        return gather(obj, self.control, self.timeout, self.rank)


def _fit(config, rank, layout, device, comm, store, where, timeout, reporter):
    start = time.perf_counter()
    shared, own = share_setup(store, rank, lambda: plan_pipeline(config, layout, device, where,
                                                                 reporter))  # fmt: skip
    stream, control, replica_group = groups(layout, rank, comm, timeout)
    if rank == 0:
        run_dir = own["run_dir"]
        set_resume_hint(run_dir.resume_command(pipeline_layout(layout)))
        reporter.run_started(config, PIPELINED.label, "torch",
                             resume=str(run_dir) if where.resume else None)  # fmt: skip
        reporter.message(_describe(layout, own["plans"], shared["micro_batch"], comm))
    ctx = stage_context(config, layout, rank, shared, (stream, replica_group), timeout, device)
    data = None
    if layout.stage(rank) == 0:
        dataset, preprocess = (
            (own["dataset"], own["preprocess"]) if rank == 0 else load_data(config.data)
        )
        data = TrainData(dataset, preprocess, device)
    if rank != 0 or shared["resumed_epoch"]:  # a new run's rank 0 probed every kernel already
        probe = build_network(config, shared["input_shape"], shared["num_classes"])
        keep_stage(probe, ctx.first, ctx.stop, device)
        warm_up(probe, ctx, shared["block_inputs"][ctx.first], shared["num_classes"],
                config.optim, device)  # fmt: skip
        del probe
    with peer_errors(None, SETUP_SECONDS):  # set-up ends together: a slow warm-up is no hang
        dist.barrier()  # the default group, whose waits are set-up's
    allocator = host_allocator(config.memory, budgeted=shared["budget"] is not None)
    set_host_allocator(exact=allocator == "exact")  # after the probe, as training.train does
    meter = MemoryMeter(device)  # baseline: after imports, data and set-up
    if device.type == "cuda" and shared["budget"]:
        cap_device_memory(device, shared["budget"])  # an overrun fails fast, as in one process
    net = build_network(config, shared["input_shape"], shared["num_classes"])
    shapes = {k: (v.shape, v.dtype) for k, v in net.state_dict().items()}  # the whole network's
    keep_stage(net, ctx.first, ctx.stop, device)
    train = config.train
    trainers = stage_trainers(net, ctx, config.optim, -(-shared["num_train"] // train.batch_size),
                              train.epochs, train.precision, device)  # fmt: skip
    run = RankRun(config, layout, rank, shared, control, timeout,
                  torch.Generator().manual_seed(train.seed))  # fmt: skip
    torch.manual_seed(train.seed + rank)  # augmentation and dropout draws
    if shared["resumed_epoch"]:
        resume_rank(net, ctx, trainers, run, own.get("checkpoint"))
    writer = RunWriter(config, own, reporter, start) if rank == 0 else None
    with meter.section():
        for epoch in range(shared["resumed_epoch"] + 1, train.epochs + 1):
            reports = train_rank_epoch(net, ctx, data, trainers, run, epoch, reporter)
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


def stage_context(config, layout: Layout, rank: int, shared, groups, timeout, device):
    """This rank's StageContext: its blocks and its links (`groups`: the stream's, the
    replicas') to the neighbouring stages and its replicas."""
    stream, replica_group = groups
    stage, replica = layout.stage(rank), layout.replica(rank)
    first, stop = shared["stages"][stage]
    inbox = outbox = None
    if stage:
        inbox = Inbox(layout.rank(stage - 1, replica), stream, timeout,
                      shared["block_inputs"][first], device)  # fmt: skip
    if stage < layout.stages - 1:
        outbox = Outbox(layout.rank(stage + 1, replica), stream, timeout)
    return StageContext(first, stop, replica, layout.replicas, inbox, outbox, replica_group,
                        timeout, rank_fault(rank), config.train.skip_bad_batches)  # fmt: skip


def train_rank_epoch(net, ctx: StageContext, data, trainers, run: RankRun, epoch, reporter):
    """One epoch of this rank, then its test accuracy; every rank's report on rank 0."""
    train, device = run.config.train, next(net.parameters()).device
    epoch_start = time.perf_counter()
    barrier(run.control, run.timeout)  # start the epoch's clock together
    train_start, cpu_start = time.perf_counter(), time.process_time()
    before = ctx.counters()
    steps = MicroSteps(run.shared["num_train"], train.batch_size, run.shared["micro_batch"],
                       run.order, ctx.replica, ctx.replicas)  # fmt: skip
    train_epoch(net, ctx, data, steps, trainers, reporter, epoch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - train_start
    # below `seconds` where the rank waited, or other work on the machine took its core
    cpu_seconds = time.process_time() - cpu_start
    during = {k: v - before[k] for k, v in ctx.counters().items()}  # training only
    if ctx.replicas > 1:
        average_buffers(net, ctx)
    eval_batch = min(train.eval_batch_size, run.shared["micro_batch"])
    correct = evaluate_stage(net, ctx, data, run.shared["num_test"], eval_batch)
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


def resume_rank(net, ctx: StageContext, trainers, run: RankRun, checkpoint) -> None:
    """Rank 0 hands every rank what its checkpoint holds for it (its stage's weights, its
    trainers' optimizers and schedules, its RNG states, the data order), and each goes on
    from there."""
    mine = [None]
    payloads = resume_payloads(checkpoint, run.layout, run.shared) if run.rank == 0 else None
    with peer_errors(0, run.timeout):
        dist.scatter_object_list(mine, payloads, src=0, group=run.control)
    (payload,) = mine
    device = next(net.parameters()).device
    net.load_state_dict({k: v.to(device) for k, v in payload["state"].items()}, strict=False)
    for trainer, state in zip(trainers, payload["trainers"], strict=True):
        trainer.load_state_dict(state)
    set_rng_states(payload["rng"])
    run.order.set_state(payload["order"])
    ctx.bad_batches = payload["bad_batches"]


def resume_payloads(checkpoint: dict, layout: Layout, shared: dict) -> list[dict]:
    """What each rank goes on with, from the merged checkpoint (RunWriter.epoch)."""
    training, state = checkpoint["training"], checkpoint["state_dict"]
    payloads = []
    for rank, saved in enumerate(training["ranks"]):
        first, stop = shared["stages"][layout.stage(rank)]
        payloads.append({"state": {k: v for k, v in state.items() if in_stage(k, first, stop)},
                         "trainers": saved["trainers"], "rng": saved["rng"],
                         "order": training["order"], "bad_batches": saved["bad_batches"]})  # fmt: skip
    return payloads


def on_cpu(obj):
    """`obj` (nested dicts, lists and tuples) with every tensor moved to the CPU, for rank 0's
    checkpoint."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(on_cpu(v) for v in obj)
    return obj


def _describe(layout: Layout, plans, micro_batch: int, comm: str) -> str:
    stages = " | ".join(p.blocks() for p in plans)
    return (f"pipeline: {layout.world} processes, {layout.stages} stage(s) of "
            f"{layout.replicas} replica(s): {stages}; micro-batch {micro_batch}, {comm}")  # fmt: skip


class RunWriter:
    """Rank 0's side of the run directory: metrics, the merged checkpoint, the summary."""

    def __init__(self, config: RunConfig, own: dict, reporter: Reporter, start: float):
        self.config, self.own, self.reporter = config, own, reporter
        self.run_dir: RunDir = own["run_dir"]
        training = (own.get("checkpoint") or {}).get("training") or {}
        pipeline = training.get("pipeline", {})
        self.records: list[dict] = list(training.get("records", []))
        self.metrics = self.run_dir.open_metrics(self.records)
        self.train_seconds: list[float] = pipeline.get("train_seconds", [])  # per epoch, slowest
        self.tally: dict[str, list] = pipeline.get("tally", {})  # per counter, per rank
        self.resumed_from = f"end of epoch {training['position']['epoch']}" if training else None
        # a resumed run's wall time goes on from its checkpoint's
        self.start = start - (own.get("checkpoint") or {}).get("wall_seconds", 0.0)

    def epoch(self, epoch, reports: list[dict], states: dict, shared: dict) -> None:
        """Merge the ranks' reports into one record per block, write them and the checkpoint."""
        merged = {}
        for r in reports:
            for block, (loss, correct, count), test, lr in zip(
                r["blocks"], r["stats"], r["test_correct"], r["lrs"], strict=True
            ):
                s, t = merged.setdefault(block, (BatchStats(), [0, lr]))
                s.loss, s.correct, s.count = s.loss + loss, s.correct + correct, s.count + count
                t[0] += test
        seconds = time.perf_counter() - reports[0]["epoch_start"]
        records = [
            s.record(block=block + 1, epoch=epoch, test_accuracy=t[0] / shared["num_test"],
                     seconds=seconds, lr=t[1])
            for block, (s, t) in sorted(merged.items())
        ]  # fmt: skip
        self.metrics.write(records)
        self.records.extend(records)
        self.train_seconds.append(max(r["train_seconds"] for r in reports))
        for key in ("sent_bytes", "allreduce_bytes", "wait_seconds", "cpu_seconds"):
            tally = self.tally.setdefault(key, [0] * len(reports))
            self.tally[key] = [t + r[key] for t, r in zip(tally, reports, strict=True)]
        self.run_dir.checkpoints.write({
            "state_dict": states,
            **checkpoint_contents(self.config, self.own["preprocess"], self.own["dataset"]),
            "training": self.training_state(epoch, reports, shared),
            "wall_seconds": time.perf_counter() - self.start,
        })  # fmt: skip
        self.reporter.epoch(records)

    def training_state(self, epoch: int, reports: list[dict], shared: dict) -> dict:
        """What a resumed run goes on with (resume_rank), in a single process's terms where
        they exist (training/state.py): its position, records and bad batches."""
        layout = {k: v for k, v in shared.items() if k != "resumed_epoch"}
        return {
            "position": {"stage": 0, "epoch": epoch, "step": 0},
            "records": list(self.records),
            "bad_batches": sum(r["bad_batches"] for r in reports if r["replica"] == 0),
            "order": reports[0]["order"],
            "ranks": [{k: r[k] for k in ("trainers", "rng", "bad_batches")} for r in reports],
            "pipeline": {
                **pipeline_layout(self.own["layout"]),
                "shared": layout,
                "plans": [asdict(p) for p in self.own["plans"]],
                "train_seconds": list(self.train_seconds),
                "tally": dict(self.tally),
            },
        }

    def summary(self, final, layout, comm, shared, timeout, device) -> dict:
        """summary.json, from every rank's `final` report; returns what it holds."""
        self.metrics.close()
        last = [r for r in self.records if r["epoch"] == self.config.train.epochs]
        plans, micro_batch = self.own["plans"], shared["micro_batch"]
        memory = MemorySummary(
            shared["budget"],
            [f["baseline"] for f in final],
            memory_kind(device.type),
            [max(f["measured_peak"] for f in final if f["stage"] == s)
             for s in range(layout.stages)],
            predicted_peak_bytes=[p.predicted_peak for p in plans],
            micro_batch=[micro_batch] * layout.stages,
            recompute_activations=[False] * layout.stages,
            normalization_batch=[micro_batch if bn else None for bn in self.own["batchnorm"]],
            per_rank=True,
            host_allocator=host_allocator(self.config.memory, shared["budget"] is not None),
        )  # fmt: skip
        return self.run_dir.write_summary(RunSummary(
            self.own["header"],
            [r["test_accuracy"] for r in last],
            bad_batches=sum(f["bad_batches"] for f in final if f["replica"] == 0),
            resumed_from=self.resumed_from,
            peak_memory_bytes=max(f["peak_memory"] for f in final),
            device=str(device),
            wall_seconds=time.perf_counter() - self.start,
            run_dir=str(self.run_dir),
            final_epoch=self.records[-1],
            memory=memory,
            pipeline=self.pipeline_section(layout, comm, shared, timeout),
        ))  # fmt: skip

    def pipeline_section(self, layout, comm, shared, timeout) -> dict:
        """summary.json's "pipeline": the layout, and the traffic and time of training."""
        epochs, plans = self.config.train.epochs, self.own["plans"]
        steps = epochs * -(-shared["num_train"] // self.config.train.batch_size)
        train_seconds = sum(self.train_seconds)
        return {
            "processes": layout.world,
            "stages": layout.stages,
            "replicas": layout.replicas,
            "communication": comm,
            "stage_blocks": [[p.first + 1, p.stop] for p in plans],
            "micro_batch": shared["micro_batch"],
            "train_seconds": round(train_seconds, 3),
            "train_samples_per_second": round(epochs * shared["num_train"] / train_seconds, 1),
            # training only, summed over ranks; per rank in the lists
            "activation_bytes_per_step": round(sum(self.tally["sent_bytes"]) / steps),
            "allreduce_bytes_per_step": round(sum(self.tally["allreduce_bytes"]) / steps),
            "sent_bytes": self.tally["sent_bytes"],
            "wait_seconds": [round(w, 3) for w in self.tally["wait_seconds"]],
            "cpu_seconds": [round(c, 3) for c in self.tally["cpu_seconds"]],
            "timeout_seconds": timeout,
        }
