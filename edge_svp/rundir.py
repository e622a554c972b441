"""The run directory: what a run leaves behind, and the one place that writes it.

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
      plan.json           the memory plan followed
      summary.json        written last: accuracies, peak and per-block memory, wall time,
                          versions, batches skipped for NaN/inf

A single process (edge_svp/run.py) and a pipeline's rank 0 (edge_svp/distributed/run_writer.py)
both write through RunDir and build summary.json from the same typed records (RunHeader,
MemorySummary, RunSummary), so the two have one schema.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path

from edge_svp.checkpoint import DIGESTS, LATEST, PREVIOUS, CheckpointStore
from edge_svp.config import RunConfig, config_from_dict, config_to_dict, dump_toml, load_config
from edge_svp.data import Preprocess
from edge_svp.errors import DataWarning, EdgeSVPError
from edge_svp.faults import full_disk, no_space
from edge_svp.files import atomic_write_text, check_new_dir, writable, write_failed
from edge_svp.memory.offload import weights_dir

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
PLAN = "plan.json"
SUMMARY = "summary.json"


def default_run_dir(config: RunConfig, schedule) -> Path:
    """runs/PROFILE-TAG-TIME, TAG naming the Schedule (training/schedule.py)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.profile}-{schedule.tag}-{stamp}"


# What a run writes into its directory (temporary files: NAME.tmp); --overwrite removes only
# these, and the user's own files stay.
WRITTEN = {CONFIG, METRICS, PLAN, SUMMARY, LATEST, PREVIOUS, DIGESTS, "cache", "ort"}


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = CheckpointStore(self.path)
        self._lock: int | None = None  # the open directory that holds our lock

    # --- one owner at a time ----------------------------------------------------------------

    def lock(self, shared: bool = False) -> bool:
        """Own the directory until unlock() or the process ends: alone (a fit or a resume), or
        `shared` with other readers (eval, export, predict). A second writer, or a writer
        while another process reads, is refused in one line; a reader that finds a writer
        at work goes on without the lock (checkpoints are replaced atomically) and gets
        False."""
        if self._lock is not None:
            return True
        try:
            import fcntl
        except ImportError:  # no flock (Windows): unguarded
            return True
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise EdgeSVPError(f"cannot open run directory {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:  # held by another process
            os.close(fd)
            if shared:
                return False
            raise EdgeSVPError(
                f"run directory {self.path} is in use by another edge-svp process (a fit, a "
                "resume, or an eval, export or predict reading it); wait for it to finish"
            ) from None
        except OSError:  # a file system without locks (some network mounts): unguarded
            os.close(fd)
            return True
        self._lock = fd
        return True

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # --- a new run --------------------------------------------------------------------

    def check_new(self, overwrite: bool) -> None:
        """Refuse a directory that a new run cannot use, before any work (nothing is
        written)."""
        out = self.path
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
        check_new_dir(out)
        if used:
            self.lock()  # not while another process trains in it or reads it

    def create(self, config: RunConfig, overwrite: bool) -> RunDir:
        """Make and lock the directory, remove what an earlier run wrote there (with
        `overwrite`; files of the user's stay) and write config.toml."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EdgeSVPError(f"cannot create run directory {self.path}: {e.strerror}") from None
        self.lock()
        self.check_new(overwrite)  # again, under the lock: another run may have begun here
        try:
            for item in self.path.iterdir():
                if item.name in WRITTEN or item.name.removesuffix(".tmp") in WRITTEN:
                    if item.is_dir() and not item.is_symlink():
                        shutil.rmtree(item)
                    else:
                        item.unlink()
        except OSError as e:
            raise EdgeSVPError(f"cannot clear run directory {self.path}: {e.strerror}") from None
        atomic_write_text(self.path / CONFIG, dump_toml(config_to_dict(config)))
        return self

    # --- a run that stopped ---------------------------------------------------------------

    def resumable_config(self) -> RunConfig:
        """The configuration of a run that stopped; a one-line error for one that cannot go
        on."""
        if not (self.path / CONFIG).is_file():
            raise EdgeSVPError(
                f"cannot resume {self.path}: it is not a run directory (no {CONFIG})"
            )
        if (self.path / SUMMARY).exists():
            raise EdgeSVPError(
                f"{self.path} has finished (it has {SUMMARY}); there is nothing to resume"
            )
        if (self.path / "ort").exists():
            raise EdgeSVPError(
                f"{self.path} was trained with --backend ort, which does not resume; "
                "start it again with --overwrite"
            )
        writable(self.path)
        return load_config(self.path / CONFIG)

    def remove_partial(self) -> None:
        """Temporary files of a process that was killed while writing: on a full disk they
        would keep it full."""
        for item in self.path.glob("*.tmp"):
            if item.name.removesuffix(".tmp") in WRITTEN:
                item.unlink(missing_ok=True)

    def config(self) -> RunConfig:
        if not (self.path / CONFIG).exists():
            raise EdgeSVPError(f"{self.path} is not a run directory (no {CONFIG})")
        return load_config(self.path / CONFIG)

    def resume_command(self, pipeline: dict | None = None) -> str:
        """The command that continues this run; a `pipeline` ({"processes": N, "stages":
        S}) is launched again as it was."""
        command = f"edge-svp fit --resume {shlex.quote(str(self.path))}"
        if pipeline:
            command += f" --nproc {pipeline['processes']} --stages {pipeline['stages']}"
        return command

    def check_resumable(self, config: RunConfig, checkpoint: dict | None,
                        pipeline: dict | None = None) -> None:  # fmt: skip
        """Refuse, in one line, to go on from `checkpoint` (None: none was written, and the
        run starts over) with `config`, as one process or as a `pipeline` ({"processes": N,
        "stages": S}): the configuration, and the pipeline's layout, must be the run's."""
        if checkpoint is None:
            return
        training = checkpoint.get("training")
        if training is None:  # a pipeline of an earlier version kept no training state
            raise EdgeSVPError(
                f"cannot resume {self.path}: its pipeline kept no training state; start it "
                "again with --overwrite"
            )
        theirs = training.get("pipeline")
        if theirs is None and pipeline:
            raise EdgeSVPError(f"{self.path} was trained in one process; resume it without "
                               f"--nproc: {self.resume_command()}")  # fmt: skip
        layout = {k: theirs[k] for k in ("processes", "stages")} if theirs else None
        if layout != pipeline:
            raise EdgeSVPError(
                f"{self.path} was trained as a pipeline of {layout['processes']} processes in "
                f"{layout['stages']} stage(s); resume it so: {self.resume_command(layout)}"
            )
        self._check_same_config(config, checkpoint["config"])

    def _check_same_config(self, config: RunConfig, saved: dict) -> None:
        with warnings.catch_warnings():  # keys renamed since: config.toml has warned already
            warnings.simplefilter("ignore", DataWarning)
            theirs = config_to_dict(config_from_dict(saved))
        ours = config_to_dict(config)
        for raw in (ours, theirs):  # the data may have moved; where to is no part of training
            raw["data"] = {**raw["data"], "data_dir": None}
        if ours != theirs:
            now, then = flatten(ours), flatten(theirs)
            changed = [f"{key} = {json.dumps(now.get(key))}, was {json.dumps(then.get(key))}"
                       for key in sorted(now.keys() | then.keys()) if now.get(key) != then.get(key)]  # fmt: skip
            raise EdgeSVPError(
                f"cannot resume {self.path}: {CONFIG} differs from the configuration its "
                f"checkpoint was trained with: {'; '.join(changed)}"
            )

    def weights_dir(self, config: RunConfig) -> Path:
        """Where a layerwise run keeps the parts of its network that wait on disk."""
        return weights_dir(self.cache_dir(config))

    def cache_dir(self, config: RunConfig) -> Path:
        """Where the run keeps its disk caches: run_dir/cache, or a folder of its own in
        memory.cache_dir."""
        if not config.memory.cache_dir:
            return self.path / "cache"
        key = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:12]
        return Path(config.memory.cache_dir) / f"edge-svp-{self.path.name}-{key}"

    # --- what training writes ---------------------------------------------------------------

    def write_plan(self, plan: dict) -> None:
        atomic_write_text(self.path / PLAN, json.dumps(plan, indent=2) + "\n")

    def open_metrics(self, records: list[dict]):
        """metrics.jsonl holding `records` (those of the checkpoint a run goes on from: a line
        written after it goes), open for appending."""
        atomic_write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in records))
        return MetricsLog(self.path / METRICS)

    def write_summary(self, summary: RunSummary) -> dict:
        """summary.json, written atomically: its presence means the run finished. Returns
        what it holds."""
        raw = summary.to_dict()
        atomic_write_text(self.path / SUMMARY, json.dumps(raw, indent=2) + "\n")
        return raw


class MetricsLog:
    """metrics.jsonl, one line per record, flushed after every epoch."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "a")

    def write(self, records: list[dict]) -> None:
        """Append whole lines: a failed write (a full disk) is cut back off."""
        end = self.file.tell()
        try:
            self.file.write("".join(json.dumps(record) + "\n" for record in records))
            self.file.flush()
            if full_disk("write"):
                raise no_space()
        except OSError as e:
            try:  # the handle still holds the failed part: let it go, then cut it off
                self.file.close()
            except OSError:
                pass
            self.file = open(self.path, "a")
            self.file.truncate(end)
            raise write_failed(self.path, e) from None

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- what a run directory says about its run -------------------------------------------------


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("edge-svp", "torch", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def flatten(raw: dict) -> dict:
    """{'section.key': value} of a configuration dict (a top-level key stays as it is)."""
    return {f"{name}.{key}" if isinstance(table, dict) else name: value
            for name, table in raw.items()
            for key, value in (table.items() if isinstance(table, dict) else [(None, table)])}  # fmt: skip


def checkpoint_contents(config: RunConfig, preprocess: Preprocess, dataset) -> dict:
    """What a checkpoint holds besides the weights."""
    return {
        "config": config_to_dict(config),
        "preprocess": preprocess.state(),
        "classes": dataset.classes,
        "input_shape": list(dataset.input_shape),
        "input_dtype": str(dataset.x_train.dtype).removeprefix("torch."),
    }


@dataclass
class RunHeader:
    """The first entries of summary.json: what was trained, on what."""

    method: str
    backend: str
    schedule: str  # a Schedule's name (training/schedule.py)
    profile: str
    dataset: str
    model: str
    num_blocks: int
    parameters: int
    epochs: int
    block_epochs: list[int]  # layerwise: each block's epochs, where they differ (else [])
    batch_size: int
    seed: int
    precision: str
    target: str | None
    train_examples: int
    test_examples: int

    @classmethod
    def of(cls, config: RunConfig, dataset, backend: str, schedule: str, net) -> RunHeader:
        train = config.train
        return cls(train.method, backend, schedule, config.profile, dataset.name,
                   config.model.kind, len(net), sum(p.numel() for p in net.parameters()),
                   train.epochs, train.block_epochs, train.batch_size, train.seed, train.precision,
                   config.target, len(dataset.y_train), len(dataset.y_test))  # fmt: skip


def memory_kind(device_type: str) -> str:
    """What a measured peak is: the CUDA allocator's, or the process's resident memory above
    its baseline."""
    return "cuda_allocator" if device_type == "cuda" else "process_rss_above_baseline"


@dataclass
class MemorySummary:
    """summary.json's "memory": the budget, predicted and measured peaks per block (per stage
    of a pipeline, each on its own rank: `per_rank`; backprop's plan has one entry, the
    whole network), whether it kept within the budget, and how each trained: its
    micro-batch, where its output cache went, whether it recomputed activations
    (backprop), its optimizer's state precision, whether it stepped in backward and whether
    its state lived in host RAM, and the batch its BatchNorm layers normalised over (None:
    it has none).
    `host_allocator` "reuse": on CPU, freed memory stayed resident for reuse, so the measured
    peaks run above the predicted ones, which count live memory."""

    budget_bytes: int | None
    baseline_bytes: int | list[int]  # per rank, for a pipeline
    kind: str  # memory_kind
    measured_peak_bytes: list[int]
    predicted_peak_bytes: list[int] | None = None  # None: nothing was planned (ort backend)
    micro_batch: list[int] | None = None
    cache: list | None = None
    recompute_activations: list[bool] | None = None
    optimizer_state: str | None = None  # the plan's state precision (None: unplanned)
    step_in_backward: bool | None = None
    state_on_host: bool | None = None
    projections_stored: bool | None = None  # None: unplanned, or no projection to let go
    normalization_batch: list[int | None] | None = None
    per_rank: bool = False
    host_allocator: str = "exact"

    @property
    def within_budget(self) -> bool:
        return (
            self.budget_bytes is None
            or max(self.measured_peak_bytes, default=0) <= self.budget_bytes
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "within_budget": self.within_budget}


@dataclass
class RunSummary:
    """summary.json of a finished run: what was trained (`header`), how well, in what time
    and memory; a pipelined run adds its `pipeline` section."""

    header: RunHeader
    per_block_accuracy: list[float | None]
    bad_batches: int
    resumed_from: str | None  # where a resumed run went on from
    peak_memory_bytes: int  # the whole process's (the largest rank's)
    device: str
    wall_seconds: float
    run_dir: str
    final_epoch: dict | None  # the last record of metrics.jsonl
    memory: MemorySummary
    pipeline: dict | None = None

    def to_dict(self) -> dict:
        out = {
            **asdict(self.header),
            "test_accuracy": self.per_block_accuracy[-1],
            "per_block_accuracy": self.per_block_accuracy,
            "bad_batches": self.bad_batches,
            "resumed_from": self.resumed_from,
            "peak_memory_bytes": self.peak_memory_bytes,
            "peak_memory_kind": "cuda_allocator"
            if self.device.startswith("cuda")
            else "process_rss",
            "wall_seconds": round(self.wall_seconds, 3),
            "device": self.device,
            "run_dir": self.run_dir,
            "versions": versions(),
            "final_epoch": self.final_epoch,
            "memory": self.memory.to_dict(),
        }
        return out if self.pipeline is None else {**out, "pipeline": self.pipeline}
