"""A run: resolve a configuration, train, and leave a self-describing run directory.

    run_dir/
      config.toml         the resolved configuration (rebuilds the run)
      metrics.jsonl       one line per block per epoch, appended as training goes
      checkpoint.pt       the latest checkpoint: weights and projection buffers,
                          preprocessing, the plan, and the training state (optimizers,
                          LR schedules, RNG states, position in the data order, the
                          activation-cache manifest); written atomically every
                          train.checkpoint_every steps, after every epoch and at every
                          block boundary
      checkpoint.prev.pt  the checkpoint before it, used if the latest is damaged
      checkpoints.json    SHA-256 digests of both (edge_svp/checkpoint.py)
      cache/              layerwise only, while it runs: activation caches on disk, kept
                          for a resumed run (unless memory.cache_dir puts them elsewhere)
      plan.json           the memory plan followed (SVP with the torch backend)
      summary.json        written last: accuracies, peak and per-block memory, wall time,
                          versions, batches skipped for NaN/inf

`fit(resume=run_dir)` (`edge-svp fit --resume`) continues a run that stopped (killed,
Ctrl-C, a full disk) from its latest good checkpoint; docs/robustness.md has the details.

This module is the Python API under `edge-svp fit`, `edge-svp eval` and `edge-svp plan`.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shlex
import shutil
import tempfile
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime
from importlib import metadata
from pathlib import Path

import torch

from edge_svp.checkpoint import LATEST, CheckpointStore, atomic_write_text
from edge_svp.config import RunConfig, config_to_dict, dump_toml, load_config
from edge_svp.data import Dataset, Preprocess, load_dataset
from edge_svp.errors import EdgeSVPError, Interrupted, NumericalFault
from edge_svp.memory import (
    MemoryMeter,
    cap_device_memory,
    format_bytes,
    parse_size,
    peak_memory_bytes,
    predictable_host_allocator,
)
from edge_svp.memory.planner import MemoryPlan
from edge_svp.models import build_blocks
from edge_svp.network import SVPNetwork
from edge_svp.progress import Reporter
from edge_svp.target import Target, load_target
from edge_svp.training import (
    TrainState,
    block_accuracies,
    measure_network,
    plan_training,
    resolve_device,
    train,
)
from edge_svp.training.precision import check_precision

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
CONFIG = "config.toml"
PLAN = "plan.json"


def build_network(config: RunConfig, input_shape, num_classes: int) -> SVPNetwork:
    torch.manual_seed(config.train.seed)  # weight initialisation
    blocks = build_blocks(config.model.kind, config.model.options, input_shape)
    return SVPNetwork(blocks, input_shape, num_classes, config.svp, seed=config.train.seed)


def load_data(config: RunConfig) -> tuple[Dataset, Preprocess]:
    dataset = load_dataset(config.data.dataset, config.data.data_dir)
    dataset = dataset.limit(config.data.train_limit)
    preprocess = Preprocess.fit(dataset.x_train, config.data.normalize, config.data.augment)
    return dataset, preprocess


def default_run_dir(config: RunConfig, schedule: str | None = None) -> Path:
    method = schedule or (
        config.train.method if config.train.method == "bp" else config.train.schedule
    )
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.profile}-{method}-{stamp}"


def _writable(directory: Path) -> None:
    """Try a temporary file in `directory`: the one test that root, read-only mounts and
    immutable folders all answer truthfully."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise EdgeSVPError(f"cannot write to {directory}: {e.strerror}") from None


def check_run_dir(out: Path, overwrite: bool) -> None:
    """Refuse a run directory that cannot be used, before any work (nothing is written)."""
    if out.exists() and not out.is_dir():
        raise EdgeSVPError(f"run directory {out} is a file")
    try:
        used = out.exists() and any(out.iterdir())
    except OSError as e:
        raise EdgeSVPError(f"cannot read run directory {out}: {e.strerror}") from None
    if used and not overwrite:
        raise EdgeSVPError(
            f"run directory {out} already exists and is not empty (continue it with "
            f"--resume {shlex.quote(str(out))}, or replace it with --overwrite)"
        )
    if used and not (out / CONFIG).exists():
        raise EdgeSVPError(f"refusing to overwrite {out}: it is not an edge-svp run directory")
    existing = out
    while not existing.exists():  # a new directory: its nearest existing parent
        existing = existing.parent
    if existing.is_dir():
        _writable(existing)


def prepare_run_dir(out: Path, overwrite: bool) -> Path:
    check_run_dir(out, overwrite)
    try:
        if out.exists() and any(out.iterdir()):
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeSVPError(f"cannot create run directory {out}: {e.strerror}") from None
    return out


def prepare_device(config: RunConfig) -> tuple[torch.device, Target | None]:
    """The training device and the run's target; set torch's CPU threads if asked."""
    config.validate()
    device = resolve_device(config.train.device)
    check_precision(config.train.precision, device)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    return device, load_target(config.target) if config.target else None


def resume_config(run_dir: str | Path) -> RunConfig:
    """The configuration of a run that stopped; a one-line error for one that cannot go on."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise EdgeSVPError(f"cannot resume {run_dir}: it is not a run directory (no {CONFIG})")
    if (run_dir / SUMMARY).exists():
        raise EdgeSVPError(f"{run_dir} has finished (it has {SUMMARY}); there is nothing to resume")
    if (run_dir / "ort").exists():
        raise EdgeSVPError(
            f"{run_dir} was trained with --backend ort, which does not resume; "
            "start it again with --overwrite"
        )
    _writable(run_dir)
    return load_config(run_dir / CONFIG)


def run_cache_dir(config: RunConfig, run_dir: Path) -> Path:
    """Where a run keeps its disk caches: run_dir/cache, or a folder of its own in
    memory.cache_dir."""
    if not config.memory.cache_dir:
        return run_dir / "cache"
    key = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]
    return Path(config.memory.cache_dir) / f"edge-svp-{run_dir.name}-{key}"


def resume_command(run_dir: Path) -> str:
    return f"edge-svp fit --resume {shlex.quote(str(run_dir))}"


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("edge-svp", "torch", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def fit(
    config: RunConfig | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    backend: str = "torch",
    resume: str | Path | None = None,
) -> dict:
    """Train as `config` says, write the run directory, return the summary.

    backend "ort" trains with ONNX Runtime (edge_svp/ort/backend.py) and keeps its export
    directory in run_dir/ort. `resume`, a run directory, continues that run from its
    latest good checkpoint with its own configuration; give nothing else with it."""
    predictable_host_allocator()  # before any thread or matrix product: see its docstring
    reporter = reporter or Reporter()
    checkpoint = None
    if resume is not None:
        if config is not None or out is not None or overwrite or backend != "torch":
            raise EdgeSVPError(
                "a resumed run keeps its own configuration, directory and backend; "
                "give only the run directory"
            )
        run_dir = Path(resume)
        config = resume_config(run_dir)
        checkpoint = CheckpointStore(run_dir).read(reporter.warning)  # None: none written yet
        check_resumable(run_dir, config, checkpoint)
    else:
        config.validate()
        run_dir = None
        check_run_dir(Path(out) if out else default_run_dir(config), overwrite)
    device, target = prepare_device(config)
    if backend == "ort":
        from edge_svp.ort.backend import check_supported, train_ort

        check_supported(config)
    if config.data.data_dir:
        config.data.data_dir = str(Path(config.data.data_dir).resolve())
    start = time.perf_counter()
    dataset, preprocess = load_data(config)
    if checkpoint:
        preprocess = Preprocess(**checkpoint["preprocess"])
    plan = None
    if backend == "torch":
        # Probe a throwaway copy, so that the network itself is charged to the measured
        # budget. The probe also runs every kernel once, for bp too, so that one-time
        # set-up is charged to no method.
        probe = build_network(config, dataset.input_shape, dataset.num_classes)
        costs = measure_network(probe, dataset, preprocess, config.train, config.optim)
        if config.train.method == "svp" and checkpoint:  # a resumed run keeps its plan
            plan = MemoryPlan.from_dict(checkpoint["plan"])
        elif config.train.method == "svp":
            plan = plan_training(
                probe, dataset, preprocess, config.train, config.optim, config.memory, costs,
                target,
            )  # fmt: skip
        del probe
    meter = MemoryMeter(device)  # baseline: after imports, data loading and the probe
    net = build_network(config, dataset.input_shape, dataset.num_classes)
    if checkpoint:
        net.restore(checkpoint, run_dir / LATEST)
    if device.type == "cuda" and config.memory.budget:
        cap_device_memory(device, parse_size(config.memory.budget))  # overrun fails fast
    # only now, with the input known to be good and the plan feasible, does anything
    # appear on disk
    if run_dir is None:
        run_dir = prepare_run_dir(Path(out) if out else default_run_dir(config), overwrite)
        atomic_write_text(run_dir / CONFIG, dump_toml(config_to_dict(config)))
    if plan and not checkpoint:
        atomic_write_text(run_dir / PLAN, json.dumps(plan.to_dict(), indent=2) + "\n")
    store = CheckpointStore(run_dir)

    def save(training: dict | None = None) -> None:
        store.write(
            {
                "state_dict": net.state_dict(),
                **checkpoint_contents(config, preprocess, dataset),
                "plan": plan.to_dict() if plan else None,
                "training": training,
            }
        )

    resumed = checkpoint["training"] if checkpoint else None
    cache_dir = run_cache_dir(config, run_dir)
    state = TrainState(config.train, save, resumed, cache_dir)
    if resumed:
        reporter.message(f"continuing from the checkpoint at {state.describe(state.resumed_from)}")
    # metrics.jsonl holds the checkpoint's epochs: a line written after it goes
    atomic_write_text(run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in state.records))
    torch_backend = backend == "torch"
    try:
        with (
            resume_hints(run_dir, state) if torch_backend else nullcontext(),
            state.interruptible() if torch_backend else nullcontext(),
            open(run_dir / METRICS, "a") as metrics,
        ):

            def on_epoch(records: list[dict]) -> None:
                try:
                    for record in records:
                        metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                except OSError as e:
                    raise EdgeSVPError(f"cannot write {run_dir / METRICS}: {e.strerror}") from None
                if not torch_backend:  # the torch backend's TrainState checkpoints
                    save()

            if backend == "ort":
                export_dir = run_dir / "ort"
                records = train_ort(
                    net, dataset, config, preprocess, export_dir, reporter, on_epoch
                )
            else:
                records = train(
                    net,
                    dataset,
                    config.train,
                    config.optim,
                    preprocess,
                    reporter,
                    on_epoch=on_epoch,
                    memory=config.memory,
                    plan=plan,
                    meter=meter,
                    state=state,
                )
    except torch.OutOfMemoryError:  # no resume hint: the same plan would run out again
        raise out_of_memory(config, plan, meter) from None
    shutil.rmtree(cache_dir, ignore_errors=True)
    eval_batch = config.train.eval_batch_size
    if plan and config.memory.budget:  # evaluation must fit the budget too
        eval_batch = min(eval_batch, *(b.micro_batch for b in plan.blocks))
    per_block = block_accuracies(net, dataset, preprocess, eval_batch)
    if config.train.method == "bp":  # only the last head is trained by backprop
        per_block = [None] * (len(per_block) - 1) + per_block[-1:]
    schedule = config.train.schedule if config.train.method == "svp" else "end-to-end"
    summary = {
        **describe_run(config, dataset, backend, schedule, net),
        "test_accuracy": per_block[-1],
        "per_block_accuracy": per_block,
        "bad_batches": state.bad_batches,
        "resumed_from": state.describe(state.resumed_from) if resumed else None,
        "peak_memory_bytes": peak_memory_bytes(device),
        "peak_memory_kind": "cuda_allocator" if device.type == "cuda" else "process_rss",
        "wall_seconds": round(time.perf_counter() - start, 3),
        "device": str(device),
        "run_dir": str(run_dir),
        "versions": versions(),
        "final_epoch": records[-1] if records else None,
        "memory": memory_report(config, plan, meter, reporter),
    }
    write_summary(run_dir, summary)
    return summary


def checkpoint_contents(config: RunConfig, preprocess: Preprocess, dataset: Dataset) -> dict:
    """What a checkpoint holds besides the weights."""
    return {
        "config": config_to_dict(config),
        "preprocess": preprocess.state(),
        "classes": dataset.classes,
        "input_shape": list(dataset.input_shape),
    }


def describe_run(config: RunConfig, dataset: Dataset, backend: str, schedule: str, net) -> dict:
    """The first entries of summary.json: what was trained, on what."""
    return {
        "method": config.train.method,
        "backend": backend,
        "schedule": schedule,
        "profile": config.profile,
        "dataset": dataset.name,
        "model": config.model.kind,
        "num_blocks": len(net),
        "parameters": sum(p.numel() for p in net.parameters()),
        "epochs": config.train.epochs,
        "batch_size": config.train.batch_size,
        "seed": config.train.seed,
        "precision": config.train.precision,
        "target": config.target,
        "train_examples": len(dataset.y_train),
        "test_examples": len(dataset.y_test),
    }


def write_summary(run_dir: Path, summary: dict) -> None:
    """summary.json, written atomically: its presence means the run finished."""
    atomic_write_text(run_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")


def check_resumable(run_dir: Path, config: RunConfig, checkpoint: dict | None) -> None:
    if checkpoint is None:
        return  # stopped before its first checkpoint: it starts over
    if checkpoint.get("training") is None:
        raise EdgeSVPError(f"cannot resume {run_dir}: its checkpoint holds no training state")
    ours, theirs = config_to_dict(config), dict(checkpoint["config"])
    for raw in (ours, theirs):  # the data may have moved; where to is no part of training
        raw["data"] = {**raw["data"], "data_dir": None}
    if ours != theirs:
        raise EdgeSVPError(
            f"cannot resume {run_dir}: {CONFIG} differs from the configuration its checkpoint "
            "was trained with"
        )


@contextmanager
def resume_hints(run_dir: Path, state: TrainState):
    """A run that stops on Ctrl-C or an error of its environment (a full disk) ends with the
    command that continues it; a numerical fault would only recur, so it does not."""
    try:
        yield
    except KeyboardInterrupt:  # a second Ctrl-C
        last = state.describe(state.saved) if state.saved else "none yet"
        raise Interrupted(
            f"stopped at once (last checkpoint: {last}); resume with: {resume_command(run_dir)}"
        ) from None
    except NumericalFault:
        raise
    except EdgeSVPError as e:
        hint = "resume with" if isinstance(e, Interrupted) else "then continue with"
        raise type(e)(f"{e}; {hint}: {resume_command(run_dir)}") from None


def plan_run(config: RunConfig):
    """The MemoryPlan `fit` would follow for `config`, without training."""
    predictable_host_allocator()  # the probe must see the allocator that training will
    _, target = prepare_device(config)
    if config.train.method != "svp":
        raise EdgeSVPError("plans are made for SVP training; backprop keeps every block resident")
    dataset, preprocess = load_data(config)
    net = build_network(config, dataset.input_shape, dataset.num_classes)
    return plan_training(
        net, dataset, preprocess, config.train, config.optim, config.memory, target=target
    )


def memory_report(config: RunConfig, plan, meter: MemoryMeter, reporter) -> dict:
    """Budget, predicted and measured peaks per block; an overrun is reported loudly."""
    budget = parse_size(config.memory.budget) if config.memory.budget else None
    predicted = [b.predicted_peak for b in plan.blocks] if plan else None
    measured = meter.peaks
    if plan and config.train.schedule == "joint":  # one measurement for the whole run
        measured = measured * len(plan.blocks)
    within = budget is None or max(measured, default=0) <= budget
    if not within and reporter:
        reporter.message(
            f"WARNING: measured peak {format_bytes(max(measured))} exceeded the budget "
            f"{format_bytes(budget)}"
        )
    return {
        "budget_bytes": budget,
        "baseline_bytes": meter.baseline,
        "kind": "cuda_allocator" if meter.device.type == "cuda" else "process_rss_above_baseline",
        "predicted_peak_bytes": predicted,
        "measured_peak_bytes": measured,
        "micro_batch": [b.micro_batch for b in plan.blocks] if plan else None,
        "cache": [b.output_cache for b in plan.blocks] if plan else None,
        "within_budget": within,
    }


def out_of_memory(config: RunConfig, plan, meter: MemoryMeter) -> EdgeSVPError:
    """One line for a CUDA allocation that failed: under a budget the memory fraction was
    capped at baseline + budget, so the plan's prediction fell short of the real need."""
    where, predicted = "training", plan.predicted_peak if plan else None
    if plan and config.train.schedule == "layerwise":
        block = min(len(meter.peaks) + 1, len(plan.blocks))  # the block being trained
        where, predicted = f"block {block}", plan.blocks[block - 1].predicted_peak
    if config.memory.budget:
        return EdgeSVPError(
            f"{where} ran out of CUDA memory under the budget {config.memory.budget} "
            f"(predicted peak {format_bytes(predicted)}); the last checkpoint is kept. Retry "
            f"with a larger --mem-budget"
        )
    return EdgeSVPError(
        f"{where} ran out of CUDA memory; set --mem-budget to the memory you can give it, "
        f"and the planner will pick micro-batches that fit"
    )


def load_run(run_dir: str | Path, data_dir: str | None = None, reporter: Reporter | None = None):
    """Rebuild a run's network, dataset and preprocessing from its directory."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise EdgeSVPError(f"{run_dir} is not a run directory (no {CONFIG})")
    config = load_config(run_dir / CONFIG)
    if data_dir:
        config.data.data_dir = data_dir
    checkpoint = CheckpointStore(run_dir).read((reporter or Reporter()).warning)
    if checkpoint is None:
        raise EdgeSVPError(f"{run_dir} has no checkpoint yet")
    dataset, _ = load_data(config)
    net = build_network(config, dataset.input_shape, dataset.num_classes)
    net.restore(checkpoint, run_dir / LATEST)
    preprocess = Preprocess(**checkpoint["preprocess"])
    return config, net, dataset, preprocess


def evaluate_run(
    run_dir: str | Path, data_dir: str | None = None, reporter: Reporter | None = None
) -> dict:
    """Reload a run's checkpoint and measure its test accuracy again."""
    config, net, dataset, preprocess = load_run(run_dir, data_dir, reporter)
    net.to(resolve_device(config.train.device))
    per_block = block_accuracies(net, dataset, preprocess, config.train.eval_batch_size)
    return {"test_accuracy": per_block[-1], "per_block_accuracy": per_block}
