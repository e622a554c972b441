"""Typed run configuration.

The dataclasses below are the single source of defaults. A profile (TOML in `profiles/`)
overrides some of them, and CLI options override the profile. A resolved configuration is
written back as TOML into every run directory, so a run can always be rebuilt.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6): the same parser, from PyPI
    import tomli as tomllib

from edge_svp.errors import DataWarning, EdgeSVPError, did_you_mean, unknown
from edge_svp.memory.size import parse_size
from edge_svp.registry import KINDS, names

# The names the learning rule's pieces go by: the modules of their packages (edge_svp/registry.py,
# read without importing torch), and the projections (PROJECTIONS in edge_svp/svp, written out;
# tests/test_config.py checks that both agree).
SVP_CHOICES = {
    **{kind: names(kind) for kind in KINDS},
    "projection": ("gaussian", "hadamard"),
}
# train.method and SVP's train.schedule: the names of the schedules in edge_svp/training
# (Schedule.method, Schedule.name), likewise written out and checked
METHODS = ("svp", "bp")
SVP_SCHEDULES = ("joint", "layerwise")
# optimizer state precisions, cheapest in accuracy first (training/optim.py); a plan reaches
# for the first two, fp8 only where asked for (it failed cifar10-cnn: docs/memory.md)
STATE_PRECISIONS = ("fp32", "bf16", "fp8")
PLANNED_STATE_PRECISIONS = STATE_PRECISIONS[:2]


@dataclass
class DataConfig:
    dataset: str = "digits"
    data_dir: str | None = None  # where mnist / cifar10 / image folders live
    normalize: bool = True  # per-channel mean/std of the training set
    augment: bool = False  # random crop (pad 4) and horizontal flip, images only
    train_limit: int | None = None  # train on the first N examples (quick trials)
    test_limit: int | None = None  # test on the first N examples (quick trials)


@dataclass
class SVPConfig:
    """The local objective of every block; see docs/svp.md for the definition."""

    # Defaults from the ablation in docs/ablation.md: small weights on the extra terms are
    # within noise of plain local cross-entropy, weights of 1.0 hurt.
    divergence: str = "bhattacharyya"  # kl | bhattacharyya | none
    # what the divergence compares with the previous block's: the projections v, or the
    # heads' class posteriors (SLL's form; no term for the first block)
    divergence_on: str = "projection"
    alignment: str = "none"  # cosine | mse | none
    beta: float = 0.1  # weight of the divergence term
    lam: float = 0.0  # weight of the alignment term
    temperature: float = 1.0
    proj_dim: int = 512  # d0, rows of the fixed random projection R_l
    # R_l: a dense Gaussian matrix, or a subsampled randomized Hadamard transform (n log n
    # additions instead of a d0 x n product; svp/hadamard.py)
    projection: str = "gaussian"
    # false: a Gaussian R_l is not held but drawn again from its seed, a few rows at a time,
    # at every use (the same v_l; less memory, more arithmetic: docs/memory.md); "auto": held
    # unless a budget needs the memory
    store_projection: bool | str = "auto"  # auto | true | false
    proj_dropout: float = 0.0
    pool_size: int = 2  # conv outputs are average-pooled to pool_size x pool_size
    token_pool: str = "mean"  # transformer outputs: mean over tokens, or "first"
    head: str = "linear"  # linear | mlp
    # auxiliary layers between a block and its projection: trainable copies of the next
    # aux_blocks blocks (fewer near the end; none after the last), so that a block learns
    # features the layers after it can use, as AugLocal's auxiliary networks do (docs/svp.md)
    aux_blocks: int = 0


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    lr_schedule: str = "cosine"  # cosine | constant
    warmup_epochs: float = 0.0  # the learning rate rises linearly from 0 over these first epochs
    # per-block multipliers of lr, block 1 first (the last one holds for deeper blocks); [] all 1
    block_lr: list[float] = field(default_factory=list)
    # Adam's state (its two moments) in fp32, bf16 or fp8 (torchao; docs/memory.md); "auto":
    # fp32 unless a budget needs less
    state_precision: str = "auto"
    # each parameter steps as soon as its gradient is complete, inside backward, so that the
    # gradients never all exist at once (micro-batch = batch); "auto": where a budget needs it
    step_in_backward: str = "auto"  # auto | on | off
    # on a GPU with memory of its own: the optimizer's state (fp32) in host RAM, stepped on the
    # CPU (torchao's CPUOffloadOptimizer); "auto": where a budget needs it
    state_on_host: str = "auto"  # auto | on | off

    def explicit_levers(self) -> list[str]:
        """The optimizer's memory levers this configuration turns on, by setting name."""
        levers = {
            "optim.state_precision": self.state_precision not in ("auto", "fp32"),
            "optim.step_in_backward": self.step_in_backward == "on",
            "optim.state_on_host": self.state_on_host == "on",
        }
        return [name for name, on in levers.items() if on]


@dataclass
class TrainConfig:
    method: str = "svp"  # svp | bp
    schedule: str = "joint"  # joint | layerwise (svp only)
    epochs: int = 10
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | fp16 | bf16: autocast per block (docs/targets.md)
    threads: int = 0  # CPU threads for torch and ONNX Runtime; 0: the CPUs not kept busy
    eval_batch_size: int = 1000
    # bp only: the classifier: "standard" (global average pooling, then a linear layer: what
    # a user would write) or "svp" (the last block's SVP head, on its fixed projection)
    bp_head: str = "standard"
    # bp only: recompute each block's activations in the backward pass instead of keeping them
    # (torch's activation checkpointing); under a budget the planner turns it on where it helps
    recompute_activations: bool = False
    checkpoint_every: int = 200  # optimizer steps between checkpoints (0: epochs and blocks only)
    skip_bad_batches: bool = False  # skip and count batches with NaN/inf instead of stopping
    # SVP: the epochs each block trains, block 1 first (the last one holds for deeper blocks);
    # [] every block trains `epochs`. Layerwise: one block after another. Joint: all start
    # together, and a block whose epochs are done runs frozen while the deeper ones train on
    # (docs/svp.md, "Levers at depth")
    block_epochs: list[int] = field(default_factory=list)

    def check_schedule(self) -> None:
        """One line for a setting the method and schedule chosen do not train with."""
        if not self.block_epochs:
            return
        if self.method != "svp":
            raise EdgeSVPError(
                "train.block_epochs is for SVP's blocks; backprop trains the whole network "
                "every epoch: drop it"
            )
        if self.schedule == "joint" and (
            max(self.block_epochs) > self.epochs or self.block_epochs[-1] != self.epochs
        ):
            raise EdgeSVPError(
                f"in SVP joint training blocks stop within the run's {self.epochs} epochs and "
                f"the deepest trains all of them: train.block_epochs {self.block_epochs} must "
                f"end with {self.epochs} and stay at or below it"
            )

    def epochs_of(self, block: int) -> int:
        """The epochs block `block` (1-based) trains for."""
        if not self.block_epochs:
            return self.epochs
        return self.block_epochs[min(block, len(self.block_epochs)) - 1]


@dataclass
class MemoryConfig:
    """The memory budget and where activation caches may live (docs/memory.md)."""

    budget: str | None = None  # e.g. "512MB", "1.5GiB"; none: no budget, no planning
    host_budget: str | None = None  # host RAM for activation caches; beyond it they spill to disk
    cache_dtype: str = "float32"  # float32 | float16
    recompute: bool = False  # recompute the frozen prefix instead of caching its outputs
    cache_dir: str | None = None  # where disk caches go (default: RUN_DIR/cache; the API: temp)
    # CPU: "exact" returns freed tensors to the OS, so resident memory tracks live memory (what
    # a budget needs, at a cost in time); "reuse" keeps them for the next step; "auto": exact
    # under a budget (memory/meter.py, set_host_allocator)
    host_allocator: str = "auto"


# --- model options: one dataclass per model kind (the builders are in edge_svp/models) --


@dataclass
class MLPOptions:
    widths: list[int] = field(default_factory=lambda: [1000, 1000, 1000])
    batchnorm: bool = False  # BatchNorm1d after each Linear


@dataclass
class CNNOptions:
    # One inner list per block: the output channels of its convolutions.
    channels: list[list[int]] = field(default_factory=lambda: [[64], [128], [256]])
    # "batch": BatchNorm, which normalises each micro-batch by its own statistics; "group":
    # GroupNorm (8 groups), the same whatever the micro-batch
    norm: str = "batch"
    # how many 2x2 max-pools, after evenly spaced blocks (the last one's included), so that a
    # deep network keeps its resolution for several blocks; none: after every block while
    # the map is 2 pixels or more
    downsamples: int | None = None


@dataclass
class ViTOptions:
    patch_size: int = 4
    dim: int = 128
    heads: int = 4
    mlp_ratio: int = 2
    layers_per_block: list[int] = field(default_factory=lambda: [2, 2, 2])
    dropout: float = 0.0
    # false: the LayerNorm before attention has no scale and shift, which the qkv layer's
    # weights absorb (the same functions). SVP detaches a block's input, so with no trained
    # parameter before the qkv layer its input-gradient product is skipped (docs/svp.md)
    attention_norm_affine: bool = True
    # a learned class token before the patch tokens (with a position of its own): what
    # svp.token_pool = "first" then reads; the standard head (backprop) still averages tokens
    class_token: bool = False


MODEL_OPTIONS = {"mlp": MLPOptions, "cnn": CNNOptions, "vit": ViTOptions}


@dataclass
class ModelConfig:
    kind: str = "mlp"
    options: typing.Any = None  # the MODEL_OPTIONS dataclass of `kind`

    def __post_init__(self):
        if self.options is None:
            self.options = MODEL_OPTIONS[self.kind]()


@dataclass
class RunConfig:
    profile: str = "digits-mlp"
    description: str = ""
    target: str | None = None  # the device the run was made for (targets/*.toml)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    svp: SVPConfig = field(default_factory=SVPConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def validate(self) -> RunConfig:
        checks = [
            *((name, getattr(self.svp, name), choices) for name, choices in SVP_CHOICES.items()),
            ("divergence_on", self.svp.divergence_on, ("projection", "posterior")),
            ("optimizer", self.optim.name, ("adam", "adamw", "sgd")),
            ("lr_schedule", self.optim.lr_schedule, ("cosine", "constant")),
            ("state_precision", self.optim.state_precision, ("auto", *STATE_PRECISIONS)),
            ("step_in_backward", self.optim.step_in_backward, ("auto", "on", "off")),
            ("state_on_host", self.optim.state_on_host, ("auto", "on", "off")),
            ("method", self.train.method, METHODS),
            ("bp_head", self.train.bp_head, ("standard", "svp")),
            ("schedule", self.train.schedule, SVP_SCHEDULES),
            ("device", self.train.device, ("auto", "cpu", "cuda")),
            ("precision", self.train.precision, ("fp32", "fp16", "bf16")),
            ("cache_dtype", self.memory.cache_dtype, ("float32", "float16")),
            ("host_allocator", self.memory.host_allocator, ("auto", "exact", "reuse")),
        ]
        for kind, value, choices in checks:
            if value not in choices:
                raise unknown(kind, value, choices)
        if self.svp.store_projection not in ("auto", True, False):
            raise EdgeSVPError(
                f"svp.store_projection must be true, false or auto, got '{self.svp.store_projection}'"
            )
        for section in (self.data, self.svp, self.optim, self.train, self.memory,
                        self.model.options):  # fmt: skip
            check_numbers(section)
        if self.svp.divergence_on == "posterior" and self.svp.lam and self.svp.alignment != "none":
            raise EdgeSVPError(
                "an alignment term compares projections; with svp.divergence_on = posterior "
                "set svp.alignment = none"
            )
        if self.optim.name == "sgd" and self.optim.state_precision not in ("auto", "fp32"):
            raise EdgeSVPError(
                f"optim.state_precision = {self.optim.state_precision} is for Adam's moments; "
                "SGD keeps fp32 momentum (use optim.name = adam or adamw)"
            )
        if self.train.precision == "fp16" and self.optim.step_in_backward == "on":
            raise EdgeSVPError(
                "optim.step_in_backward = on cannot run with precision fp16: its gradient "
                "scaler checks every gradient before any parameter steps (use bf16 or fp32)"
            )
        self.train.check_schedule()
        if self.optim.state_on_host == "on":
            self._check_state_on_host()
        for size in (self.memory.budget, self.memory.host_budget):
            if size is not None:
                parse_size(size)
        return self

    def _check_state_on_host(self) -> None:
        """What optim.state_on_host = on cannot go with (the device is checked where it is
        known: training/optim.py, check_state_on_host)."""
        optim = self.optim
        clashes = [
            (optim.state_precision not in ("auto", "fp32"),
             f"optim.state_precision = {optim.state_precision}", "the state in host RAM is fp32"),
            (optim.step_in_backward == "on", "optim.step_in_backward = on",
             "the CPU steps every parameter after backward"),
            (self.train.precision == "fp16", "precision fp16",
             "its gradient scaler would check gradients the CPU steps with (use bf16 or fp32)"),
        ]  # fmt: skip
        for present, setting, why in clashes:
            if present:
                raise EdgeSVPError(f"optim.state_on_host = on cannot run with {setting}: {why}")


# What each numeric setting may be, by name (in whichever section it is); lists are checked
# item by item. Every float must be finite.
POSITIVE = {"epochs", "block_epochs", "batch_size", "eval_batch_size", "proj_dim", "pool_size",
            "temperature", "lr", "block_lr", "train_limit", "test_limit", "widths", "channels",
            "patch_size", "dim", "heads", "mlp_ratio", "layers_per_block", "downsamples"}  # fmt: skip
NON_NEGATIVE = {"beta", "lam", "weight_decay", "threads", "checkpoint_every", "seed",
                "warmup_epochs", "aux_blocks"}  # fmt: skip
FRACTIONS = {"proj_dropout", "dropout", "momentum"}  # in [0, 1)
LARGEST_SEED = 2**63 - 1  # torch's generators take a 64-bit seed


def _numbers(value):
    if isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


# The model's lists of blocks: one entry per block, and a network has at least one.
BLOCK_LISTS = {"widths", "channels", "layers_per_block"}


def check_numbers(section) -> None:
    """One line for the first number of a configuration section that cannot be."""
    for f in dataclasses.fields(section):
        name = f.name
        if name in BLOCK_LISTS and not getattr(section, name):
            raise EdgeSVPError(f"{name} must list at least one block, got []")
        for x in _numbers(getattr(section, name)):
            if isinstance(x, float) and not math.isfinite(x):
                raise EdgeSVPError(f"{name} must be a finite number, got {x}")
            if name in POSITIVE and x <= 0:
                raise EdgeSVPError(f"{name} must be positive, got {x}")
            if name in NON_NEGATIVE and x < 0:
                raise EdgeSVPError(f"{name} must be 0 or more, got {x}")
            if name in FRACTIONS and not 0 <= x < 1:
                raise EdgeSVPError(f"{name} must be in [0, 1), got {x}")
            if name == "seed" and x > LARGEST_SEED:
                raise EdgeSVPError(f"seed must be at most {LARGEST_SEED}, got {x}")


# --- building dataclasses from TOML tables, with errors that name the bad key --------------


def _type_ok(value, annotation) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    return isinstance(value, annotation)


TOML_TYPES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def type_name(annotation) -> str:
    """A setting's type as a TOML user says it: 'an integer', 'a list of integers', ..."""
    if annotation in TOML_TYPES:
        return TOML_TYPES[annotation]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]  # None: unset
    if typing.get_origin(annotation) is list:
        noun = type_name(args[0]).removeprefix("an ").removeprefix("a ")
        head, of, tail = noun.partition(" of ")  # lists of integers
        return f"a list of {head}s{of}{tail}"
    if args:
        return " or ".join(type_name(a) for a in args)
    return str(annotation)


# Keys that were renamed, by section: still read, with a warning.
RENAMED = {"train": {"checkpointing": "recompute_activations"}}


def renamed(table: dict, section: str, where: str) -> dict:
    """`table` with every key of RENAMED[section] under its new name."""
    out = dict(table)
    for old, new in RENAMED.get(section, {}).items():
        if old in out:
            warnings.warn(f"{where}: '{old}' is now '{new}'; read as '{new}'", DataWarning,
                          stacklevel=3)  # fmt: skip
            out[new] = out.pop(old)
    return out


def from_table(cls, table: dict, where: str):
    """Build dataclass `cls` from a TOML table; unknown keys and wrong types are errors."""
    if not isinstance(table, dict):
        raise EdgeSVPError(f"{where} must be a table")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key, value in table.items():
        if key not in names:
            raise EdgeSVPError(f"unknown key '{key}' in {where}{did_you_mean(key, names)}")
        if not _type_ok(value, hints[key]):
            raise EdgeSVPError(
                f"{where}.{key} = {json.dumps(value, default=str)} has the wrong type "
                f"(expected {type_name(hints[key])})"
            )
    kwargs = {k: (float(v) if hints[k] is float else v) for k, v in table.items()}
    return cls(**kwargs)


def config_from_dict(raw: dict, where: str = "config") -> RunConfig:
    raw = dict(raw)
    sections = {
        "data": DataConfig,
        "svp": SVPConfig,
        "optim": OptimConfig,
        "train": TrainConfig,
        "memory": MemoryConfig,
    }
    allowed = ["profile", "description", "target", "model", *sections]
    for key in raw:
        if key not in allowed:
            homes = [name for name, cls in {**sections, **MODEL_OPTIONS}.items()
                     if key in {f.name for f in dataclasses.fields(cls)}]  # fmt: skip
            home = "model" if homes and homes[0] in MODEL_OPTIONS else homes[0] if homes else ""
            hint = f" (put it under [{home}])" if home else did_you_mean(key, allowed)
            raise EdgeSVPError(f"unknown key '{key}' in {where}{hint}")
    kwargs = {
        name: from_table(cls, renamed(raw.get(name, {}), name, f"{where} [{name}]"),
                         f"{where} [{name}]")
        for name, cls in sections.items()
    }  # fmt: skip
    model = dict(raw.get("model", {}))
    kind = model.pop("kind", ModelConfig.kind)
    if kind not in MODEL_OPTIONS:
        raise unknown("model kind", kind, MODEL_OPTIONS)
    options = from_table(MODEL_OPTIONS[kind], model, f"{where} [model]")
    target = raw.get("target")
    if target is not None and not isinstance(target, str):
        raise EdgeSVPError(f"{where}: target must be a target name, got {target!r}")
    return RunConfig(
        profile=raw.get("profile", RunConfig.profile),
        description=raw.get("description", ""),
        target=target,
        model=ModelConfig(kind=kind, options=options),
        **kwargs,
    ).validate()


def config_to_dict(config: RunConfig) -> dict:
    out = {"profile": config.profile, "description": config.description, "target": config.target}
    for name in ("data", "svp", "optim", "train", "memory"):
        out[name] = dataclasses.asdict(getattr(config, name))
    out["model"] = {"kind": config.model.kind, **dataclasses.asdict(config.model.options)}
    return out


def override(config: RunConfig, **changes) -> RunConfig:
    """Apply `section.key` overrides, e.g. override(c, **{"train.epochs": 3}); None is skipped."""
    raw = config_to_dict(config)
    kind = changes.get("model.kind")
    if kind is not None and kind != raw["model"]["kind"]:
        raw["model"] = {"kind": kind}  # another model kind starts from its own defaults
    for dotted, value in changes.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if not isinstance(raw.get(section), dict) or not key:
            tables = [k for k, v in raw.items() if isinstance(v, dict)]
            raise EdgeSVPError(
                f"unknown setting '{dotted}': expected SECTION.KEY with SECTION one of "
                f"{', '.join(tables)}{did_you_mean(section, tables)}"
            )
        raw[section][key] = value
    return config_from_dict(raw, where=f"profile {config.profile}")


def parse_settings(settings: list[str]) -> dict:
    """['svp.beta=0.1', 'model.widths=[64, 64]'] -> {'svp.beta': 0.1, ...}; values are TOML."""
    out = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep:
            raise EdgeSVPError(f"setting '{setting}' must look like SECTION.KEY=VALUE")
        try:
            out[key.strip()] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = text.strip()  # a bare word is a string: --set svp.divergence=kl
    return out


# --- profiles ------------------------------------------------------------------------------


def shipped_dir(name: str) -> Path:
    """A data folder kept at the top of the repository (profiles, targets)."""
    package = Path(__file__).resolve().parent
    installed = package / name  # an installed wheel carries it inside the package
    return installed if installed.is_dir() else package.parent / name  # source checkout


def profile_dir() -> Path:
    return shipped_dir("profiles")


def profile_names() -> list[str]:
    return sorted(p.stem for p in profile_dir().glob("*.toml"))


def find_toml(name_or_path: str, kind: str, folder: Path) -> Path:
    """A shipped file of `folder` by name, or any TOML file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = folder / f"{name_or_path}.toml"
        if not path.exists():
            raise unknown(kind, name_or_path, [p.stem for p in folder.glob("*.toml")])
    elif not path.exists():
        raise EdgeSVPError(f"{kind} file not found: {path}")
    return path


def read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise EdgeSVPError(f"{path} is not valid TOML: {e}") from None


def _profile_table(name_or_path: str, chain: tuple[Path, ...] = ()) -> dict:
    """A profile's TOML with `extends = "BASE"` resolved: its tables are merged key by key
    into BASE's (a [model] of another kind replaces BASE's), other keys replace BASE's."""
    path = find_toml(name_or_path, "profile", profile_dir())
    raw = read_toml(path)
    raw.setdefault("profile", path.stem)
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("data_dir"), str):
        # a relative data_dir is the profile's, wherever the command runs
        data["data_dir"] = str(path.parent / Path(data["data_dir"]).expanduser())
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise EdgeSVPError(f"{path.name}: extends must be a profile name, got {base!r}")
    if path.resolve() in chain:
        raise EdgeSVPError(f"{path.name}: profiles extend each other in a circle")
    if base.endswith(".toml"):  # a path, relative to the profile that names it
        base = str(path.parent / base)
    merged = _profile_table(base, (*chain, path.resolve()))
    for key, value in raw.items():
        old = merged.get(key)
        tables = isinstance(value, dict) and isinstance(old, dict)
        if tables and (key != "model" or value.get("kind", old.get("kind")) == old.get("kind")):
            merged[key] = {**old, **value}
        else:
            merged[key] = value
    return merged


def load_profile(name_or_path: str) -> RunConfig:
    """A shipped profile by name (`mnist-mlp`) or any TOML file by path."""
    raw = _profile_table(name_or_path)
    return config_from_dict(raw, where=find_toml(name_or_path, "profile", profile_dir()).name)


def load_config(path: Path) -> RunConfig:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise EdgeSVPError(f"cannot read configuration {path}: {e}") from None
    return config_from_dict(raw, where=str(path))


def dump_toml(raw: dict) -> str:
    """TOML for a configuration dict; None values (unset options) are left out."""

    def present(table: dict) -> dict:
        return {
            k: present(v) if isinstance(v, dict) else v for k, v in table.items() if v is not None
        }

    return tomli_w.dumps(present(raw))
