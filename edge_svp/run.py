"""A run: resolve a configuration, train, and leave a self-describing run directory
(edge_svp/rundir.py).

    summary = fit(load_profile("digits-mlp"), out="runs/digits")
    summary = fit(resume="runs/digits")      # go on from its latest good checkpoint

`fit(resume=run_dir)` (`edge-svp fit --resume`) continues a run that stopped (killed,
Ctrl-C, a full disk) from its latest good checkpoint; docs/robustness.md has the details.

This module is the Python API under `edge-svp fit`, `edge-svp eval` and `edge-svp plan`.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edge_svp.checkpoint import LATEST
from edge_svp.config import RunConfig
from edge_svp.data import SHAPES, Dataset, Preprocess, load_data, synthetic_data
from edge_svp.device import resolve_device
from edge_svp.errors import DataNotFound, EdgeSVPError, Interrupted, NumericalFault
from edge_svp.memory.meter import (
    MemoryMeter,
    cap_device_memory,
    frozen_heap,
    set_host_allocator,
    unified_memory,
)
from edge_svp.memory.offload import resident_state
from edge_svp.memory.plan import MemoryPlan
from edge_svp.memory.size import format_bytes, parse_size
from edge_svp.network import SVPNetwork, build_network
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
from edge_svp.target import Target, load_target
from edge_svp.threads import choose_threads
from edge_svp.trained_run import load_run
from edge_svp.training import (
    Schedule,
    TrainState,
    block_accuracies,
    plan_training,
    schedule_of,
)
from edge_svp.training.backprop import has_batchnorm
from edge_svp.training.optim import check_state_on_host
from edge_svp.training.precision import check_precision


@dataclass
class Job:
    """What a fit is about to do: its configuration, where it writes, where it trains."""

    config: RunConfig
    run_dir: RunDir
    overwrite: bool
    device: torch.device
    target: Target | None
    schedule: Schedule
    budget: int | None  # memory.budget in bytes
    resumed: bool = False
    checkpoint: dict | None = None  # a resumed run's latest good checkpoint, if it has one
    started: float = 0.0  # time.perf_counter() when the run began (before its checkpoint's)


def fit(
    config: RunConfig | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    backend: str = "torch",
    resume: str | Path | None = None,
) -> dict:
    """Train as `config` says, write the run directory, return the summary.

    backend "ort" trains with ONNX Runtime (edge_svp/ort/schedule.py) and keeps its export
    directory in run_dir/ort. `resume`, a run directory, continues that run from its
    latest good checkpoint with its own configuration; give nothing else with it.
    `reporter` shows progress (edge_svp.progress.ConsoleReporter prints a line per epoch)."""
    # one arena, set before any thread or matrix product allocates; training then follows
    # its plan's host allocator (training.train)
    set_host_allocator(exact=True)
    reporter = reporter or Reporter()
    job = resolve_job(config, out, overwrite, backend, resume, reporter)
    try:
        with frozen_heap():  # the meters' garbage collections skip what was alive before
            return Fit(job, reporter).run()
    finally:
        job.run_dir.unlock()


@dataclass
class Fit:
    """One fit as it goes: its job, and what each step makes for the next (the data, the
    memory plan, the meter, the network, the training state)."""

    job: Job
    reporter: Reporter
    dataset: Dataset = field(init=False)
    preprocess: Preprocess = field(init=False)
    plan: MemoryPlan | None = field(init=False)  # None for the ort backend
    meter: MemoryMeter = field(init=False)
    net: SVPNetwork = field(init=False)
    state: TrainState | None = field(init=False, default=None)

    def run(self) -> dict:
        job = self.job
        # a resumed run's wall time goes on from its checkpoint's
        job.started = time.perf_counter() - (job.checkpoint or {}).get("wall_seconds", 0.0)
        self.dataset, self.preprocess = load_data(job.config.data)
        if job.checkpoint:
            self.preprocess = Preprocess(**job.checkpoint["preprocess"])
        self.plan = self.plan_memory()
        # baseline: after imports, data and the probe
        self.meter = MemoryMeter(job.device, settle=job.budget is not None)
        self.net = self.build_network()
        self.open_run_dir()
        resumed = str(job.run_dir) if job.resumed else None
        self.reporter.run_started(job.config, job.schedule.label, job.schedule.backend,
                                  resume=resumed)  # fmt: skip
        self.train()
        with resume_hints(job.run_dir, self.state):
            return self.summarise()

    def plan_memory(self) -> MemoryPlan | None:
        """The memory plan training follows (a resumed run keeps its own); none for the ort
        backend. The probe runs on a throwaway copy of the network, so that the network
        itself is charged to the measured budget; it also runs every kernel once, so that
        one-time set-up is charged to no method."""
        job, dataset = self.job, self.dataset
        if not job.schedule.planned:
            return None
        if job.checkpoint and job.checkpoint.get("plan"):
            return MemoryPlan.from_dict(job.checkpoint["plan"])
        config = job.config
        probe = build_network(config, dataset.input_shape, dataset.num_classes)
        return plan_training(probe, dataset, self.preprocess, config.train, config.optim,
                             config.memory, target=job.target, reporter=self.reporter)  # fmt: skip

    def build_network(self) -> SVPNetwork:
        """The network, restored from the checkpoint of a resumed run; under a CUDA budget,
        the allocator capped so that an overrun fails fast."""
        job = self.job
        net = build_network(job.config, self.dataset.input_shape, self.dataset.num_classes)
        if job.checkpoint:
            net.restore(job.checkpoint, job.run_dir / LATEST, job.run_dir.weights_dir(job.config))
        if job.device.type == "cuda" and job.budget:
            cap_device_memory(job.device, job.budget)
        return net

    def open_run_dir(self) -> None:
        """Only now, with the input known to be good and the plan feasible, does anything
        appear on disk."""
        job = self.job
        if not job.resumed:
            job.run_dir.create(job.config, job.overwrite)
        if self.plan and not job.checkpoint:
            with resume_hints(job.run_dir, None):
                job.run_dir.write_plan(self.plan.to_dict())

    def save(self, training: dict | None = None) -> None:
        """A checkpoint: the network, what rebuilds it, the plan and the training state."""
        job = self.job
        job.run_dir.checkpoints.write({
            # the parts of the network on disk are listed in the training state instead
            "state_dict": resident_state(self.net, self.state.offloaded),
            **checkpoint_contents(job.config, self.preprocess, self.dataset),
            "plan": self.plan.to_dict() if self.plan else None,
            "training": training,
            "wall_seconds": time.perf_counter() - job.started,
        })  # fmt: skip

    def train(self) -> None:
        """Train with the job's backend, checkpointing (torch) and logging every epoch."""
        job, reporter = self.job, self.reporter
        resumed = job.checkpoint["training"] if job.checkpoint else None
        self.state = state = TrainState(job.config.train, self.save, resumed,
                                        job.run_dir.cache_dir(job.config),
                                        per_block=job.schedule.per_block)  # fmt: skip
        if resumed:
            reporter.message(
                f"continuing from the checkpoint at {state.describe(state.resumed_from)}"
            )
        resumable = job.schedule.resumable
        try:
            with (
                resume_hints(job.run_dir, state) if resumable else nullcontext(),
                state.interruptible() if resumable else nullcontext(),
                job.run_dir.open_metrics(state.records) as metrics,
            ):
                job.schedule.run_fit(self, metrics.write)
        except torch.OutOfMemoryError:  # no resume hint: the same plan would run out again
            raise self.out_of_memory() from None
        shutil.rmtree(state.cache_dir, ignore_errors=True)

    def summarise(self) -> dict:
        """Evaluate every head, write summary.json and return it."""
        job, plan, state = self.job, self.plan, self.state
        eval_batch = job.config.train.eval_batch_size
        if plan and job.budget:  # evaluation must fit the budget too
            eval_batch = min(eval_batch, *(b.micro_batch for b in plan.blocks))
        accuracies = block_accuracies(self.net, self.dataset, self.preprocess, eval_batch)
        return job.run_dir.write_summary(RunSummary(
            RunHeader.of(job.config, self.dataset, job.schedule.backend, job.schedule.name,
                         self.net),
            job.schedule.trained_heads(accuracies),
            bad_batches=state.bad_batches,
            resumed_from=state.describe(state.resumed_from) if job.checkpoint else None,
            peak_memory_bytes=self.meter.process_peak(),
            device=str(job.device),
            wall_seconds=time.perf_counter() - job.started,
            run_dir=str(job.run_dir),
            final_epoch=state.records[-1] if state.records else None,
            memory=self.memory_report(),
        ))  # fmt: skip

    def memory_report(self) -> MemorySummary:
        """Budget, predicted and measured peaks per block; an overrun is reported loudly."""
        job, plan, meter = self.job, self.plan, self.meter
        measured = job.schedule.measured_peaks(meter.peaks, plan) if plan else meter.peaks
        report = MemorySummary(job.budget, meter.baseline, memory_kind(meter.device.type),
                               measured)  # fmt: skip
        if plan:
            modules = job.schedule.planned_modules(self.net)
            report.predicted_peak_bytes = [b.predicted_peak for b in plan.blocks]
            report.micro_batch = [b.micro_batch for b in plan.blocks]
            report.cache = [b.output_cache for b in plan.blocks]
            report.recompute_activations = [b.recompute_activations for b in plan.blocks]
            report.optimizer_state = plan.state_precision
            report.step_in_backward = plan.step_in_backward
            report.state_on_host = plan.state_on_host
            report.projections_stored = plan.projections_stored
            report.normalization_batch = [b.micro_batch if has_batchnorm(m) else None
                                          for b, m in zip(plan.blocks, modules, strict=True)]  # fmt: skip
            report.host_allocator = plan.host_allocator
        if not report.within_budget:
            self.reporter.message(
                f"WARNING: measured peak {format_bytes(max(measured))} exceeded the budget "
                f"{format_bytes(job.budget)}"
            )
        return report

    def out_of_memory(self) -> EdgeSVPError:
        """One line for a CUDA allocation that failed: under a budget the memory fraction
        was capped at baseline + budget, so the plan's prediction fell short of the real
        need."""
        job = self.job
        where, predicted = job.schedule.training_where(len(self.meter.peaks), self.plan)
        if job.budget:
            return EdgeSVPError(
                f"{where} ran out of CUDA memory under the budget {job.config.memory.budget} "
                f"(predicted peak {format_bytes(predicted)}); the last checkpoint is kept. "
                "Retry with a larger --mem-budget"
            )
        return EdgeSVPError(
            f"{where} ran out of CUDA memory; set --mem-budget to the memory you can give "
            "it, and the planner will pick micro-batches that fit"
        )


def prepare_device(config: RunConfig) -> tuple[torch.device, Target | None]:
    """The training device and the run's target; torch's CPU threads (choose_threads)."""
    device = resolve_device(config.train.device)
    check_precision(config.train.precision, device)
    target = load_target(config.target) if config.target else None
    unified = unified_memory(device) or bool(target and target.unified_memory)
    check_state_on_host(config.optim, device.type, unified)
    torch.set_num_threads(choose_threads(config.train.threads))
    return device, target


def resolve_job(config, out, overwrite, backend, resume, reporter) -> Job:
    """Check everything a fit is given before any work: the configuration, the run
    directory (a new one, or one to resume and its checkpoint), the device, the backend.
    The run directory is locked from here on (edge_svp/rundir.py), if it exists."""
    checkpoint = None
    if resume is not None:
        if config is not None or out is not None or overwrite or backend != "torch":
            raise EdgeSVPError(
                "a resumed run keeps its own configuration, directory and backend; "
                "give only the run directory"
            )
        run_dir = RunDir(resume)
        config = run_dir.resumable_config()
        run_dir.lock()  # one resume at a time: they would share the activation caches
    else:
        config.validate()
        run_dir = RunDir(out if out else default_run_dir(config, schedule_of(config.train)))
    try:
        if resume is not None:
            run_dir.remove_partial()
            checkpoint = run_dir.checkpoints.read(reporter.warning)  # None: none written yet
            run_dir.check_resumable(config, checkpoint)
        else:
            run_dir.check_new(overwrite)
        device, target = prepare_device(config)
        schedule = schedule_of(config.train)
        if backend == "ort":
            from edge_svp.ort.schedule import on_ort

            schedule = on_ort(schedule, config)
        schedule.check(config, backend)
    except BaseException:
        run_dir.unlock()
        raise
    if config.data.data_dir:
        config.data.data_dir = str(Path(config.data.data_dir).resolve())
    budget = parse_size(config.memory.budget) if config.memory.budget else None
    return Job(config, run_dir, overwrite, device, target, schedule, budget,
               resume is not None, checkpoint)  # fmt: skip


@contextmanager
def resume_hints(run_dir: RunDir, state: TrainState | None):
    """A run that stops on Ctrl-C, SIGTERM or an error of its environment (a full disk) ends
    with the command that continues it, the latter with exit code 3 (training stopped, the
    last checkpoint is kept); a numerical fault would only recur, so it gets no command."""
    try:
        yield
    except KeyboardInterrupt:  # a second Ctrl-C
        last = state.describe(state.saved) if state and state.saved else "none yet"
        raise Interrupted(
            f"stopped at once (last checkpoint: {last}); resume with: {run_dir.resume_command()}"
        ) from None
    except NumericalFault:
        raise
    except EdgeSVPError as e:
        hint = "resume with" if isinstance(e, Interrupted) else "then continue with"
        e.args = (f"{e}; {hint}: {run_dir.resume_command()}",)
        if not isinstance(e, Interrupted):
            e.exit_code = 3
        raise


def plan_run(config: RunConfig, reporter: Reporter | None = None) -> MemoryPlan:
    """The MemoryPlan `fit` would follow for `config`, without training (`reporter`: the
    probing's progress)."""
    set_host_allocator(exact=True)  # before any thread or matrix product, as fit does
    _, target = prepare_device(config.validate())
    try:
        dataset, preprocess = load_data(config.data)
        probed_on = None
    except DataNotFound as e:  # nothing trains: inputs of the dataset's shape will do
        if config.data.dataset not in SHAPES:
            raise
        dataset, preprocess = synthetic_data(config.data)
        probed_on = f"synthetic {config.data.dataset} inputs ({e})"
    net = build_network(config, dataset.input_shape, dataset.num_classes)
    # every lever planned: the smallest budget quoted is the smallest fit would accept
    plan = plan_training(net, dataset, preprocess, config.train, config.optim, config.memory,
                         target=target, every_lever=True, reporter=reporter)  # fmt: skip
    plan.probed_on = probed_on
    return plan


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | None = None,
    reporter: Reporter | None = None,
    threads: int = 0,
) -> dict:
    """Reload a run's checkpoint and measure its test accuracy again, on `threads` CPU
    threads (0: choose_threads)."""
    torch.set_num_threads(choose_threads(threads))
    run = load_run(run_dir, reporter)
    config, net = run.config, run.net
    net.to(resolve_device(config.train.device))
    per_block = block_accuracies(net, run.dataset(data_dir), run.preprocess,
                                 config.train.eval_batch_size)  # fmt: skip
    return {"test_accuracy": per_block[-1], "per_block_accuracy": per_block,
            "unfinished": run.unfinished}  # fmt: skip
