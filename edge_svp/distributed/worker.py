"""One rank of a pipelined fit, started by the local launcher or by torchrun.

    rendezvous (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from the environment)
    rank 0: load data, probe the blocks, assign stages, create the run directory; tell the
            others through the rendezvous store
    every rank: build the network from the seed, keep its stage, train it epoch by epoch
    every epoch: rank 0 gathers statistics and the stages' weights, writes metrics.jsonl and
            one merged checkpoint.pt, the same files a single-process fit writes
    the end: rank 0 writes summary.json

Set-up (joining, loading data, probing) may take up to SETUP_SECONDS; after it, any wait for
another rank ends after `timeout` seconds. Failures are reported as failure.py says.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from edge_svp.config import RunConfig
from edge_svp.data import load_data
from edge_svp.distributed import DEFAULT_TIMEOUT
from edge_svp.distributed.failure import PeerFailure, note, report, stop_on_sigterm
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
from edge_svp.distributed.stages import Layout, assign_stages
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
    RunDir,
    checkpoint_contents,
    default_run_dir,
    memory_summary,
    run_header,
    summary,
)
from edge_svp.training import measure_network
from edge_svp.training.backprop import has_batchnorm
from edge_svp.training.common import BatchStats, MicroSteps, TrainData, resolve_device
from edge_svp.training.planning import host_allocator

SETUP_SECONDS = 600
SETUP_KEY = "setup"


def check_config(config: RunConfig, backend: str = "torch") -> None:
    """What a pipeline can train: SVP, joint steps, with torch."""
    if config.train.method != "svp":
        raise EdgeSVPError("a pipeline trains SVP; backprop (--method bp) runs in one process")
    if config.train.schedule != "joint":
        raise EdgeSVPError("a pipeline trains every block on every batch, as the joint schedule "
                           "does; drop --schedule layerwise")  # fmt: skip
    if backend != "torch":
        raise EdgeSVPError("a pipeline trains with torch; --backend ort runs in one process")
    if config.train.precision != "fp32":
        raise EdgeSVPError("a pipeline trains in fp32; add --precision fp32")


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
) -> dict | None:
    """Run this process's rank; rank 0 returns the summary, the others None. A rank that
    fails, or whose peer fails, says so and exits (failure.py)."""
    set_host_allocator(exact=True)  # before any thread or matrix product, as fit does
    rank = int(os.environ["RANK"])
    store = None
    stop_on_sigterm(f"rank {rank}")
    try:
        check_config(config, backend)
        layout = Layout(int(os.environ["WORLD_SIZE"]), stages or int(os.environ["WORLD_SIZE"]))
        device, comm = rank_device(config.train.device)
        store = join(rank, layout.world, timeout)
        return _fit(config, rank, layout, device, comm, store, out, overwrite, timeout,
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


def plan_pipeline(config: RunConfig, layout: Layout, device, out, overwrite) -> tuple[dict, dict]:
    """Rank 0's set-up: (what every rank needs, what rank 0 keeps)."""
    dataset, preprocess = load_data(config.data)
    probe = build_network(config, dataset.input_shape, dataset.num_classes)
    costs = measure_network(probe, dataset, preprocess, config.train, config.optim)
    # what a stage holds to make its first block's reference: R_0, or the previous objective
    reference_bytes = [sum(b.numel() * b.element_size() for b in probe.input_projection.buffers())]
    reference_bytes += [c.objective_bytes for c in costs[:-1]]
    budget = parse_size(config.memory.budget) if config.memory.budget else None
    plans, micro_batch = assign_stages(costs, layout.stages, device.type,
                                       config.train.batch_size, reference_bytes, budget)  # fmt: skip
    header = run_header(config, dataset, "torch", "pipelined", probe)
    batchnorm = [has_batchnorm(probe.blocks[p.first : p.stop]) for p in plans]
    del probe
    run_dir = RunDir(out if out else default_run_dir(config, "pipelined"))
    run_dir.create(config, overwrite)
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
    own = {"dataset": dataset, "preprocess": preprocess, "plans": plans, "header": header,
           "run_dir": run_dir, "batchnorm": batchnorm}  # fmt: skip
    return shared, own


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


def _fit(config, rank, layout, device, comm, store, out, overwrite, timeout, reporter):
    start = time.perf_counter()
    shared, own = share_setup(store, rank, lambda: plan_pipeline(config, layout, device, out,
                                                                 overwrite))  # fmt: skip
    stream, control, replica_group = groups(layout, rank, comm, timeout)
    stage, replica = layout.stage(rank), layout.replica(rank)
    first, stop = shared["stages"][stage]
    micro_batch, num_train = shared["micro_batch"], shared["num_train"]
    if rank == 0:
        reporter.run_started(config, "torch", pipelined=True)
        reporter.message(_describe(layout, own["plans"], micro_batch, comm))
    data = None
    if stage == 0:
        dataset, preprocess = (
            (own["dataset"], own["preprocess"]) if rank == 0 else load_data(config.data)
        )
        data = TrainData(dataset, preprocess, device)
    ctx = StageContext(
        first, stop, replica, layout.replicas,
        inbox=Inbox(layout.rank(stage - 1, replica), stream, timeout,
                    shared["block_inputs"][first], device) if stage else None,
        outbox=Outbox(layout.rank(stage + 1, replica), stream, timeout)
        if stage < layout.stages - 1 else None,
        replica_group=replica_group, timeout=timeout, fault=rank_fault(rank),
        skip_bad_batches=config.train.skip_bad_batches,
    )  # fmt: skip
    if rank != 0:  # rank 0's probe ran every kernel once already
        probe = build_network(config, shared["input_shape"], shared["num_classes"])
        keep_stage(probe, first, stop, device)
        warm_up(probe, ctx, shared["block_inputs"][first], shared["num_classes"], config.optim,
                device)  # fmt: skip
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
    keep_stage(net, first, stop, device)
    train = config.train
    steps = -(-num_train // train.batch_size)
    trainers = stage_trainers(net, ctx, config.optim, steps, train.epochs, train.precision,
                              device)  # fmt: skip
    order = torch.Generator().manual_seed(train.seed)
    torch.manual_seed(train.seed + rank)  # augmentation and dropout draws
    writer = RunWriter(config, own, reporter) if rank == 0 else None
    eval_batch = min(train.eval_batch_size, micro_batch)
    with meter.section():
        for epoch in range(1, train.epochs + 1):
            epoch_start = time.perf_counter()
            barrier(control, timeout)  # start the epoch's clock together
            train_start, cpu_start = time.perf_counter(), time.process_time()
            before = ctx.counters()
            epoch_steps = MicroSteps(num_train, train.batch_size, micro_batch, order, replica,
                                     layout.replicas)  # fmt: skip
            train_epoch(net, ctx, data, epoch_steps, trainers, reporter, epoch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - train_start
            # below `seconds` where the rank waited, or other work on the machine took its core
            cpu_seconds = time.process_time() - cpu_start
            during = {k: v - before[k] for k, v in ctx.counters().items()}  # training only
            if layout.replicas > 1:
                average_buffers(net, ctx)
            correct = evaluate_stage(net, ctx, data, shared["num_test"], eval_batch)
            reports = gather({
                "blocks": list(ctx.owned),
                "stats": [(t.stats.loss, t.stats.correct, t.stats.count) for t in trainers],
                "lrs": [t.lr for t in trainers],
                "test_correct": correct,
                "train_seconds": seconds,
                "cpu_seconds": cpu_seconds,
                **during,
            }, control, timeout, rank)  # fmt: skip
            states = collect_states(net, layout, rank, shared["stages"], shapes, control, timeout)
            if writer:
                writer.epoch(epoch, reports, states, shared, epoch_start)
            del states  # the other stages' weights go once written, not at the next epoch
    final = gather({
        "rank": rank, "stage": stage, "replica": replica,
        "measured_peak": meter.peaks[0], "baseline": meter.baseline,
        "bad_batches": ctx.bad_batches,
        "peak_memory": meter.process_peak(),
    }, control, timeout, rank)  # fmt: skip
    summary = None
    if writer:
        summary = writer.summary(final, layout, comm, shared, timeout, device, start)
    barrier(control, timeout)  # no rank leaves while another still needs it
    dist.destroy_process_group()
    return summary


def _describe(layout: Layout, plans, micro_batch: int, comm: str) -> str:
    stages = " | ".join(p.blocks() for p in plans)
    return (f"pipeline: {layout.world} processes, {layout.stages} stage(s) of "
            f"{layout.replicas} replica(s): {stages}; micro-batch {micro_batch}, {comm}")  # fmt: skip


class RunWriter:
    """Rank 0's side of the run directory: metrics, the merged checkpoint, the summary."""

    def __init__(self, config: RunConfig, own: dict, reporter: Reporter):
        self.config, self.own, self.reporter = config, own, reporter
        self.run_dir: RunDir = own["run_dir"]
        self.metrics = self.run_dir.open_metrics([])
        self.records: list[dict] = []
        self.train_seconds: list[float] = []  # per epoch, the slowest rank's
        self.tally: dict[str, list] = {}  # per counter, per rank, summed over epochs

    def epoch(self, epoch, reports: list[dict], states: dict, shared: dict, start) -> None:
        """Merge the ranks' reports into one record per block, write them and the checkpoint."""
        merged = {}
        for r in reports:
            for block, (loss, correct, count), test, lr in zip(
                r["blocks"], r["stats"], r["test_correct"], r["lrs"], strict=True
            ):
                s, t = merged.setdefault(block, (BatchStats(), [0, lr]))
                s.loss, s.correct, s.count = s.loss + loss, s.correct + correct, s.count + count
                t[0] += test
        seconds = time.perf_counter() - start
        records = [
            s.record(block=block + 1, epoch=epoch, test_accuracy=t[0] / shared["num_test"],
                     seconds=seconds, lr=t[1])
            for block, (s, t) in sorted(merged.items())
        ]  # fmt: skip
        self.metrics.write(records)
        contents = checkpoint_contents(self.config, self.own["preprocess"], self.own["dataset"])
        # no training state: a pipelined run cannot resume, but eval and export read it
        self.run_dir.checkpoints.write({"state_dict": states, **contents,
                                        "last_record": records[-1]})  # fmt: skip
        self.records.extend(records)
        self.reporter.epoch(records)
        self.train_seconds.append(max(r["train_seconds"] for r in reports))
        for key in ("sent_bytes", "allreduce_bytes", "wait_seconds", "cpu_seconds"):
            tally = self.tally.setdefault(key, [0] * len(reports))
            self.tally[key] = [t + r[key] for t, r in zip(tally, reports, strict=True)]

    def summary(self, final, layout, comm, shared, timeout, device, start):
        self.metrics.close()
        epochs = self.config.train.epochs
        last = [r for r in self.records if r["epoch"] == epochs]
        steps = epochs * -(-shared["num_train"] // self.config.train.batch_size)
        plans = self.own["plans"]
        measured = [max(f["measured_peak"] for f in final if f["stage"] == s)
                    for s in range(layout.stages)]  # fmt: skip
        train_seconds = sum(self.train_seconds)
        result = summary(
            self.own["header"],
            [r["test_accuracy"] for r in last],
            bad_batches=sum(f["bad_batches"] for f in final if f["replica"] == 0),
            resumed_from=None,
            peak_memory_bytes=max(f["peak_memory"] for f in final),
            device=device,
            wall_seconds=time.perf_counter() - start,
            run_dir=self.run_dir,
            final_epoch=self.records[-1],
            memory=memory_summary(
                shared["budget"],
                [f["baseline"] for f in final],
                device.type,
                [p.predicted_peak for p in plans],
                measured,
                [shared["micro_batch"]] * layout.stages,
                None,
                [False] * layout.stages,
                [shared["micro_batch"] if bn else None for bn in self.own["batchnorm"]],
                per_rank=True,
                host_allocator=host_allocator(self.config.memory, shared["budget"] is not None),
            ),
            pipeline={
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
            },
        )
        self.run_dir.write_summary(result)
        return result
