"""A run: resolve a configuration, train, and leave a self-describing run directory.

    run_dir/
      config.toml      the resolved configuration (rebuilds the run)
      metrics.jsonl    one line per block per epoch, appended as training goes
      checkpoint.pt    weights, projection buffers and preprocessing, written atomically
                       after every epoch
      plan.json        the memory plan followed (SVP with the torch backend)
      summary.json     written last: accuracies, peak and per-block memory, wall time,
                       versions

This module is the Python API under `edge-svp fit`, `edge-svp eval` and `edge-svp plan`.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path

import torch

from edge_svp.config import RunConfig, config_to_dict, dump_toml, load_config
from edge_svp.data import Dataset, Preprocess, load_dataset
from edge_svp.errors import EdgeSVPError
from edge_svp.memory import (
    MemoryMeter,
    cap_device_memory,
    format_bytes,
    parse_size,
    peak_memory_bytes,
    predictable_host_allocator,
)
from edge_svp.models import build_blocks
from edge_svp.network import SVPNetwork, read_checkpoint
from edge_svp.progress import Reporter
from edge_svp.training import (
    block_accuracies,
    measure_network,
    plan_training,
    resolve_device,
    train,
)

CHECKPOINT = "checkpoint.pt"
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


def prepare_run_dir(out: Path, overwrite: bool) -> Path:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise EdgeSVPError(f"run directory {out} already exists and is not empty (--overwrite)")
        if not (out / CONFIG).exists():
            raise EdgeSVPError(f"refusing to overwrite {out}: it is not an edge-svp run directory")
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeSVPError(f"cannot create run directory {out}: {e.strerror}") from None
    return out


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("edge-svp", "torch", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def fit(
    config: RunConfig,
    out: str | Path | None = None,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    backend: str = "torch",
) -> dict:
    """Train as `config` says, write the run directory, return the summary.

    backend "ort" trains with ONNX Runtime (edge_svp/ort/backend.py) and keeps its export
    directory in run_dir/ort."""
    predictable_host_allocator()  # before any thread or matrix product: see its docstring
    config.validate()
    if backend == "ort":
        from edge_svp.ort.backend import check_supported, train_ort

        check_supported(config)
    if config.data.data_dir:
        config.data.data_dir = str(Path(config.data.data_dir).resolve())
    start = time.perf_counter()
    dataset, preprocess = load_data(config)
    device = resolve_device(config.train.device)
    plan = None
    if backend == "torch":
        # Probe a throwaway copy, so that the network itself is charged to the measured
        # budget. The probe also runs every kernel once, for bp too, so that one-time
        # set-up is charged to no method.
        probe = build_network(config, dataset.input_shape, dataset.num_classes)
        costs = measure_network(probe, dataset, preprocess, config.train, config.optim)
        if config.train.method == "svp":
            plan = plan_training(
                probe, dataset, preprocess, config.train, config.optim, config.memory, costs
            )
        del probe
    meter = MemoryMeter(device)  # baseline: after imports, data loading and the probe
    net = build_network(config, dataset.input_shape, dataset.num_classes)
    if device.type == "cuda" and config.memory.budget:
        cap_device_memory(device, parse_size(config.memory.budget))  # overrun fails fast
    # only now, with the input known to be good and the plan feasible, does anything
    # appear on disk
    run_dir = prepare_run_dir(Path(out) if out else default_run_dir(config), overwrite)
    (run_dir / CONFIG).write_text(dump_toml(config_to_dict(config)))
    if plan:
        (run_dir / PLAN).write_text(json.dumps(plan.to_dict(), indent=2) + "\n")

    def checkpoint(records=None):
        net.save(
            run_dir / CHECKPOINT,
            **checkpoint_contents(config, preprocess, dataset),
            last_record=records[-1] if records else None,
        )

    with open(run_dir / METRICS, "w") as metrics:

        def on_epoch(records: list[dict]) -> None:
            for record in records:
                metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            checkpoint(records)

        if backend == "ort":
            export_dir = run_dir / "ort"
            records = train_ort(net, dataset, config, preprocess, export_dir, reporter, on_epoch)
        else:
            try:
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
                )
            except torch.OutOfMemoryError:
                raise out_of_memory(config, plan, meter) from None
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
        "train_examples": len(dataset.y_train),
        "test_examples": len(dataset.y_test),
    }


def write_summary(run_dir: Path, summary: dict) -> None:
    """summary.json, written atomically: its presence means the run finished."""
    tmp = run_dir / (SUMMARY + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(run_dir / SUMMARY)


def plan_run(config: RunConfig):
    """The MemoryPlan `fit` would follow for `config`, without training."""
    predictable_host_allocator()  # the probe must see the allocator that training will
    config.validate()
    if config.train.method != "svp":
        raise EdgeSVPError("plans are made for SVP training; backprop keeps every block resident")
    dataset, preprocess = load_data(config)
    net = build_network(config, dataset.input_shape, dataset.num_classes)
    return plan_training(net, dataset, preprocess, config.train, config.optim, config.memory)


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
            f"(predicted peak {format_bytes(predicted)}); the checkpoint of the last finished "
            f"epoch is kept. Retry with a larger --mem-budget"
        )
    return EdgeSVPError(
        f"{where} ran out of CUDA memory; set --mem-budget to the memory you can give it, "
        f"and the planner will pick micro-batches that fit"
    )


def load_run(run_dir: str | Path, data_dir: str | None = None):
    """Rebuild a run's network, dataset and preprocessing from its directory."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise EdgeSVPError(f"{run_dir} is not a run directory (no {CONFIG})")
    config = load_config(run_dir / CONFIG)
    if data_dir:
        config.data.data_dir = data_dir
    checkpoint = read_checkpoint(run_dir / CHECKPOINT)
    dataset, _ = load_data(config)
    net = build_network(config, dataset.input_shape, dataset.num_classes)
    net.load(run_dir / CHECKPOINT)
    state = checkpoint["preprocess"]
    preprocess = Preprocess(state["mean"], state["std"], state["augment"])
    return config, net, dataset, preprocess


def evaluate_run(run_dir: str | Path, data_dir: str | None = None) -> dict:
    """Reload a run's checkpoint and measure its test accuracy again."""
    config, net, dataset, preprocess = load_run(run_dir, data_dir)
    net.to(resolve_device(config.train.device))
    per_block = block_accuracies(net, dataset, preprocess, config.train.eval_batch_size)
    return {"test_accuracy": per_block[-1], "per_block_accuracy": per_block}
