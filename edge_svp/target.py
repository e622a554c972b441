"""Device targets: the machine a run is made for, as data (targets/*.toml).

    target = load_target("jetson-orin-nano-8gb")
    target.budget_bytes            # the default memory budget: fraction x memory - reserve
    config = apply_target(config, target)   # device, budget, precision, threads
    print(target_toml(detect_target()))     # this machine, in the same format

On a unified-memory target (Jetson boards) the CPU and the GPU share one RAM: the budget
covers host-side activation caches and frozen blocks too, and the planner counts them
(docs/targets.md).
"""

from __future__ import annotations

import dataclasses
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from edge_svp.config import (
    RunConfig,
    dump_toml,
    find_toml,
    from_table,
    override,
    read_toml,
    shipped_dir,
)
from edge_svp.errors import EdgeSVPError, did_you_mean, unknown
from edge_svp.memory.size import format_bytes, parse_size

DEVICES = ("cuda", "cpu")
PRECISIONS = ("fp32", "fp16", "bf16")
CPU_PRECISIONS = ("fp32", "bf16")  # fp16 autocast on a CPU is emulated and far slower than fp32
# The budget rule `targets detect` writes for the current machine.
DETECTED_RULE = {"cuda": (0.9, "512MiB"), "cpu": (0.5, "1GiB")}


@dataclass
class Target:
    device: str  # cuda | cpu: where training runs
    memory: str  # total memory training shares: the GPU's, or the RAM on CPU and unified boards
    unified_memory: bool  # CPU and GPU share one RAM (Jetson): the budget covers host caches
    budget_fraction: float  # default budget = budget_fraction x memory - budget_reserve
    budget_reserve: str  # what the OS, the CUDA context and the runtime keep
    precisions: list[str]  # what the device trains in: fp32, fp16, bf16
    precision: str  # the default, one of `precisions`
    execution_providers: list[str]  # ONNX Runtime, in order of preference
    cpu_threads: int  # threads for torch and ONNX Runtime on the CPU
    description: str = ""
    name: str = field(default="", compare=False)  # the file's stem

    @property
    def memory_bytes(self) -> int:
        return parse_size(self.memory)

    @property
    def reserve_bytes(self) -> int:
        return 0 if self.budget_reserve in ("0", 0) else parse_size(self.budget_reserve)

    @property
    def budget_bytes(self) -> int:
        return int(self.budget_fraction * self.memory_bytes) - self.reserve_bytes

    def validate(self) -> Target:
        where = f"target {self.name}"
        if self.device not in DEVICES:
            raise EdgeSVPError(f"{where}: {unknown('device', self.device, DEVICES)}")
        if not 0 < self.budget_fraction <= 1:
            raise EdgeSVPError(
                f"{where}: budget_fraction must be in (0, 1], got {self.budget_fraction}"
            )
        if self.budget_bytes <= 0:
            raise EdgeSVPError(
                f"{where}: the budget rule leaves nothing: {self.budget_fraction} x {self.memory} "
                f"- {self.budget_reserve}"
            )
        if self.unified_memory and self.device != "cuda":
            raise EdgeSVPError(f"{where}: unified_memory describes a GPU sharing the host's RAM")
        if not self.precisions:
            raise EdgeSVPError(f"{where}: precisions is empty")
        allowed = PRECISIONS if self.device == "cuda" else CPU_PRECISIONS
        for name in [*self.precisions, self.precision]:
            if name not in allowed:
                raise EdgeSVPError(f"{where}: {unknown(f'{self.device} precision', name, allowed)}")
        if self.precision not in self.precisions:
            raise EdgeSVPError(f"{where}: precision {self.precision} is not in precisions")
        for provider in self.execution_providers:
            if not provider.endswith("ExecutionProvider"):
                raise EdgeSVPError(
                    f"{where}: '{provider}' is not an ONNX Runtime execution provider name "
                    "(e.g. CUDAExecutionProvider)"
                )
        if not self.execution_providers:
            raise EdgeSVPError(f"{where}: execution_providers is empty")
        if self.cpu_threads < 1:
            raise EdgeSVPError(f"{where}: cpu_threads must be 1 or more, got {self.cpu_threads}")
        return self


def target_dir() -> Path:
    return shipped_dir("targets")


def target_names() -> list[str]:
    return sorted(p.stem for p in target_dir().glob("*.toml"))


def target_from_dict(raw: dict, name: str) -> Target:
    """Build and validate a Target; an unknown or missing key is named in the error."""
    keys = [f.name for f in dataclasses.fields(Target) if f.name != "name"]
    required = [f.name for f in dataclasses.fields(Target) if f.default is dataclasses.MISSING]
    for key in raw:
        if key not in keys:
            raise EdgeSVPError(f"unknown key '{key}' in target {name}{did_you_mean(key, keys)}")
    for key in required:
        if key not in raw:
            raise EdgeSVPError(f"target {name} is missing the key '{key}'")
    target = from_table(Target, raw, f"target {name}")
    target.name = name
    return target.validate()


def load_target(name_or_path: str) -> Target:
    """A shipped target by name (`jetson-orin-nano-8gb`) or any TOML file by path."""
    path = find_toml(name_or_path, "target", target_dir())
    # a file outside the shipped ones keeps its path, so that a run can load it again
    name = path.stem if path.parent == target_dir() else name_or_path
    return target_from_dict(read_toml(path), name)


def target_toml(target: Target) -> str:
    raw = dataclasses.asdict(target)
    del raw["name"]
    return dump_toml({"description": raw.pop("description"), **raw})


# --- applying a target to a run ---------------------------------------------------------


def apply_target(
    config: RunConfig, target: Target, keep: set[str] = frozenset(), strict: bool = False
) -> tuple[RunConfig, str | None]:
    """The run `config` made for `target`, and a one-line note when it must fall back.

    The target sets the device, the memory budget (SVP only: backprop follows no plan), the
    precision and the CPU threads, except the settings named in `keep` (given by the user).
    Threads are left alone where OMP_NUM_THREADS is set: the machine's operator said so.
    A CUDA target without CUDA present trains on the CPU with the same plan (fp16 becomes
    fp32 there), or, with `strict`, is refused."""
    from edge_svp.training import schedule_of

    follows_budget = schedule_of(config.train).follows_budget
    changes = {
        "train.device": target.device,
        "memory.budget": str(target.budget_bytes) if follows_budget else None,
        "train.precision": target.precision,
        # never more threads than this machine has cores, when it stands in for the target
        "train.threads": None
        if "OMP_NUM_THREADS" in os.environ
        else min(target.cpu_threads, os.cpu_count() or 1),
    }
    changes = {k: v for k, v in changes.items() if k not in keep}
    config = override(config, **changes)
    config.target = target.name
    if config.train.precision not in target.precisions:
        raise EdgeSVPError(
            f"target {target.name} trains in {', '.join(target.precisions)}, "
            f"not {config.train.precision}"
        )
    note = None
    if config.train.device == "cuda" and "train.device" not in keep and not cuda_available():
        if strict:
            raise EdgeSVPError(
                f"target {target.name} needs CUDA and torch sees no CUDA device (--strict)"
            )
        fallback = "fp32" if config.train.precision not in CPU_PRECISIONS else None
        note = (
            f"target {target.name} wants CUDA, torch sees none: training runs on the CPU, "
            f"following the plan made for the target"
            + (f", in fp32 instead of {config.train.precision}" if fallback else "")
        )
        config = override(config, **{"train.device": "cpu", "train.precision": fallback})
    return config, note


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# --- describing this machine ------------------------------------------------------------


def detect_target() -> Target:
    """The current machine as a Target (psutil, torch.cuda, onnxruntime if installed)."""
    import psutil
    import torch

    from edge_svp.memory.meter import unified_memory

    threads = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if torch.cuda.is_available():
        device = torch.device("cuda")
        props = torch.cuda.get_device_properties(device)
        unified = unified_memory(device)
        # an integrated GPU shares the host's RAM; torch reports it as the GPU's memory
        memory = props.total_memory
        precisions = ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
        what = f"{props.name}, compute capability {props.major}.{props.minor}"
        kind = "cuda"
    else:
        unified = False
        memory = psutil.virtual_memory().total
        cpuinfo = _cpuinfo()
        precisions = ["fp32"] + (["bf16"] if _cpu_has_bf16(cpuinfo) else [])
        models = [line.partition(":")[2].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")]  # fmt: skip
        what = models[0] if models else platform.machine()
        kind = "cpu"
    fraction, reserve = DETECTED_RULE[kind]
    target = Target(
        device=kind,
        memory=f"{memory / 2**30:.2f}GiB".replace(".00GiB", "GiB"),
        unified_memory=unified,
        budget_fraction=fraction,
        budget_reserve=reserve,
        precisions=precisions,
        precision="fp32",
        execution_providers=_execution_providers(),
        cpu_threads=threads,
        description=f"this machine ({platform.node()}): {what}, {format_bytes(memory)}",
        name="detected",
    )
    return target.validate()


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_has_bf16(cpuinfo: str) -> bool:
    """bf16 is native on x86 with AVX512-BF16 or AMX, and on Arm with the BF16 extension."""
    flags = cpuinfo.split()
    return any(f in flags for f in ("avx512_bf16", "amx_bf16", "bf16"))


def _execution_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return ["CPUExecutionProvider"]
    return list(onnxruntime.get_available_providers())
