"""The `edge-svp` command: a thin layer over edge_svp.run and edge_svp.config."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path

import click
from click.core import ParameterSource

from edge_svp.config import (
    METHODS,
    SVP_SCHEDULES,
    load_profile,
    override,
    parse_settings,
    profile_names,
)
from edge_svp.distributed import DEFAULT_TIMEOUT
from edge_svp.errors import DataWarning, EdgeSVPError, Interrupted
from edge_svp.memory.size import format_bytes


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def user_errors(fn):
    """Bad input ends in one line on stderr and exit code 2, never a traceback; a numerical
    fault in exit code 3, Ctrl-C in 130 (edge_svp/errors.py)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgeSVPError as e:
            label = "interrupted" if isinstance(e, Interrupted) else "error"
            click.echo(f"edge-svp: {label}: {_one_line(e)}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("edge-svp: interrupted", err=True)
            sys.exit(130)
        except EOFError as e:  # click would report it as Ctrl-C: it is a reader's bug
            raise RuntimeError(f"unexpected end of input: {e}") from e

    return wrapper


_python_show_warning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Suspect input (DataWarning) is one line, as refusals are."""
    if issubclass(category, DataWarning):
        click.echo(f"edge-svp: warning: {_one_line(message)}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


class OneLineGroup(click.Group):
    """Click's own usage errors (an unknown option, a value out of range) also end in one
    line on stderr and exit code 2, like every other refusal."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        warnings.showwarning = _show_warning
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # a bare `edge-svp`: show the help
            e.show()
            sys.exit(e.exit_code)
        except click.ClickException as e:
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx else ""
            click.echo(f"edge-svp: error: {_one_line(e.format_message())}{hint}", err=True)
            sys.exit(2)
        except click.Abort:
            click.echo("edge-svp: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edge-svp")
def main():
    """Train networks block by block with Stochastic Variational Propagation (SVP)."""


# Options that override the profile, shared by `fit` and `plan`: name -> config key.
PROFILE_OVERRIDES = {
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "train_limit": "data.train_limit",
    "test_limit": "data.test_limit",
    "method": "train.method",
    "schedule": "train.schedule",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "device": "train.device",
    "precision": "train.precision",
    "lr": "optim.lr",
    "mem_budget": "memory.budget",
    "host_budget": "memory.host_budget",
    "recompute": "memory.recompute",
    "skip_bad_batches": "train.skip_bad_batches",
    "threads": "train.threads",
}


# what --resume may be given with: how many processes a pipelined run is resumed on
PIPELINE_OPTIONS = ("nproc", "stages", "timeout")

THREADS = click.option(
    "--threads", type=click.IntRange(min=1),
    help="CPU threads (default: OMP_NUM_THREADS if set, else the CPUs this process may use "
    "that other work is not keeping busy).",
)  # fmt: skip


def profile_options(command):
    """The profile and every option that overrides it."""
    options = [
        click.option("--profile", default="digits-mlp", show_default=True,
                     help="Training recipe: a name from `edge-svp profiles` or a TOML file."),
        click.option("--dataset",
                     help="Dataset: digits, mnist, fashion-mnist, cifar10 or imagefolder."),
        click.option("--data-dir", type=click.Path(),
                     help="Folder holding the dataset files (imagefolder: the folder or zip)."),
        click.option("--method", type=click.Choice(METHODS),
                     help="svp: block-local SVP learning; bp: end-to-end backprop baseline."),
        click.option("--schedule", type=click.Choice(SVP_SCHEDULES),
                     help="SVP schedule: all blocks per batch, or one block after another."),
        click.option("--epochs", type=click.IntRange(min=1),
                     help="Epochs (per block for layerwise)."),
        click.option("--batch-size", type=click.IntRange(min=1),
                     help="Mini-batch size (kept under a budget by gradient accumulation)."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate."),
        click.option("--seed", type=int, help="Seed for weights, projections and data order."),
        click.option("--train-limit", type=click.IntRange(min=1),
                     help="Train on the first N training examples only (quick trials)."),
        click.option("--test-limit", type=click.IntRange(min=1),
                     help="Test on the first N test examples only (quick trials)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]),
                     help="Where to train (default: the profile's, usually auto)."),
        click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]),
                     help="Autocast precision per block (fp16: CUDA only, with a gradient "
                     "scaler)."),
        click.option("--target", "target_name", metavar="NAME|FILE.toml",
                     help="Device target from `edge-svp targets`: sets the device, the default "
                     "memory budget and the precision (options given here win)."),
        click.option("--strict", is_flag=True,
                     help="Refuse a CUDA target when no CUDA is present, instead of running "
                     "on the CPU."),
        click.option("--mem-budget", metavar="SIZE",
                     help="Memory budget, e.g. 512MB, 1.5GiB or bytes: CUDA allocator memory, "
                     "or on CPU resident memory above the baseline (docs/memory.md)."),
        click.option("--host-budget", metavar="SIZE",
                     help="Host RAM for activation caches; beyond it they spill to disk."),
        click.option("--recompute", is_flag=True, default=None,
                     help="Recompute the frozen prefix instead of caching its outputs "
                     "(keeps data augmentation live)."),
        click.option("--skip-bad-batches", is_flag=True, default=None,
                     help="Skip (and count) batches whose loss or gradients are NaN or inf, "
                     "instead of stopping."),
        THREADS,
        click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="Override any profile setting, e.g. --set svp.beta=0.1 "
                     "--set model.widths=[500,500]. VALUE is a TOML value; repeatable."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def resolve_config(profile: str, settings, target_name=None, strict=False, keep=(), **options):
    """The profile, made for the target, overridden by the given options (None means: keep
    the profile's or the target's). A fallback from a missing CUDA is noted on stderr."""
    changes = {PROFILE_OVERRIDES[name]: value for name, value in options.items()}
    changes.update(parse_settings(settings))  # --set train.epochs=3 and --epochs: --set wins
    config = override(load_profile(profile), **changes)
    if target_name:
        from edge_svp.target import apply_target, load_target

        given = {key for key, value in changes.items() if value is not None} | set(keep)
        config, note = apply_target(config, load_target(target_name), given, strict)
        if note:
            click.echo(f"edge-svp: {note}", err=True)
    return config


@main.command()
@profile_options
@click.option("--out", type=click.Path(file_okay=False),
              help="Run directory (default: runs/<profile>-<schedule>-<time>).")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option(
    "--backend",
    type=click.Choice(["torch", "ort"]),
    default="torch",
    show_default=True,
    help="Train with torch, or with ONNX Runtime training (SVP layerwise; the ort extra).",
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    help="Train on N local processes: the blocks split into pipeline stages "
    "(docs/distributed.md). Under torchrun, leave it out.",
)
@click.option(
    "--stages",
    type=click.IntRange(min=1),
    help="Pipeline stages (default: one per process); each stage runs on "
    "processes/stages data-parallel replicas.",
)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT,
              show_default=True,
              help="With --nproc or torchrun: seconds a process waits for another before "
              "it stops.")  # fmt: skip
@click.option("--resume", type=click.Path(), metavar="RUN_DIR",
              help="Continue RUN_DIR from its latest checkpoint, with its own config.toml "
              "(give no other option; a pipelined run: its --nproc and --stages).")  # fmt: skip
@user_errors
def fit(profile, settings, out, overwrite, backend, nproc, stages, timeout, resume, **options):
    """Train a network and write a run directory.

    The profile gives every setting; the options below override it. With no options this
    trains an SVP MLP on scikit-learn's digits, which needs no download.
    """
    from edge_svp import distributed
    from edge_svp.progress import ConsoleReporter, Reporter
    from edge_svp.run import fit as run_fit
    from edge_svp.rundir import RunDir

    if resume:
        ctx = click.get_current_context()
        given = [
            p.opts[0]
            for p in ctx.command.params
            if p.name not in ("resume", *PIPELINE_OPTIONS)
            and ctx.get_parameter_source(p.name) is not ParameterSource.DEFAULT
        ]
        if given:
            raise EdgeSVPError(
                f"--resume continues {resume} with its own config.toml; drop {', '.join(given)}"
            )
    mode = distributed.mode(nproc, stages)  # None: this process trains alone
    if resume and mode:  # the pipeline goes on in its own directory, with its configuration
        config, out = RunDir(resume).resumable_config(), resume
    elif not resume:
        # the ort backend plans no budget: a target's default budget does not apply to it
        keep = ["memory.budget"] if backend == "ort" else []
        config = resolve_config(profile, settings, keep=keep, **options)
    if mode == "launch":
        from edge_svp.distributed.launch import launch

        code, reason = launch(config, nproc, stages, out, overwrite, timeout, backend,
                              resume=bool(resume))  # fmt: skip
        if code:
            click.echo(f"edge-svp: error: {reason}", err=True)
        sys.exit(code)
    if mode == "rank":
        from edge_svp.distributed.worker import fit_rank

        if distributed.rank() != 0:  # rank 0 speaks for the run
            fit_rank(config, out, overwrite, stages, timeout, Reporter(), backend, bool(resume))
            return
    reporter = ConsoleReporter()
    if mode == "rank":
        summary = fit_rank(config, out, overwrite, stages, timeout, reporter, backend,
                           bool(resume))  # fmt: skip
    elif resume:
        summary = run_fit(reporter=reporter, resume=resume)
    else:
        summary = run_fit(config, out, overwrite, reporter, backend)
    reporter.run_finished(summary)


@main.command()
@profile_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@user_errors
def plan(profile, settings, as_json, **options):
    """Show the memory plan for a profile: per block, what it costs, its micro-batch,
    where its activation cache lives and its predicted peak; and the smallest budget that
    works. Nothing is trained."""
    from edge_svp.progress import ConsoleReporter, print_plan
    from edge_svp.run import plan_run
    from edge_svp.training import schedule_of

    config = resolve_config(profile, settings, **options)
    memory_plan = plan_run(config, ConsoleReporter())
    if as_json:
        click.echo(json.dumps(memory_plan.to_dict(), indent=2))
    else:
        print_plan(memory_plan, config, schedule_of(config.train).label)


@main.command("eval")
@click.argument("run_dir", type=click.Path())
@click.option("--data-dir", help="Dataset folder, if it moved since training.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@THREADS
@user_errors
def eval_(run_dir, data_dir, as_json, threads):
    """Reload RUN_DIR's checkpoint and measure its test accuracy."""
    from edge_svp.progress import ConsoleReporter, print_accuracy
    from edge_svp.run import evaluate_run

    result = evaluate_run(run_dir, data_dir, ConsoleReporter(0), threads or 0)
    if as_json:
        click.echo(json.dumps(result))
        return
    print_accuracy(result)


@main.command()
@click.argument("source", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write to FILE (.csv, or .jsonl for JSON lines) instead of stdout.")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]),
              help="Output format (default: from --out's suffix, else csv).")  # fmt: skip
@click.option(
    "--backend",
    type=click.Choice(["torch", "ort"]),
    default="torch",
    show_default=True,
    help="torch: SOURCE is a run directory; ort: SOURCE is an inference export "
    "(edge-svp export RUN_DIR --inference --out DIR), run by ONNX Runtime alone.",
)
@THREADS
@user_errors
def predict(source, inputs, out, fmt, backend, threads):
    """Predict the class of every INPUT with a trained network: image files, folders of
    images, .npy arrays or IDX files of raw uint8 pixels. Prints (or writes) one line per
    input: its name, the predicted class and every class's probability."""
    from edge_svp.files import atomic_write_text, check_new_dir
    from edge_svp.predict import output_format, predict_files, predictions_text

    if out:
        check_new_dir(Path(out).resolve().parent)  # before any work
    from edge_svp.progress import ConsoleReporter

    names, probabilities, classes = predict_files(source, list(inputs), backend, threads or 0,
                                                  ConsoleReporter(0))  # fmt: skip
    text = predictions_text(names, probabilities, classes, output_format(out, fmt))
    if out:
        atomic_write_text(out, text)
        click.echo(f"wrote {len(names)} predictions to {out}", err=True)
    else:
        click.echo(text, nl=False)


@main.command()
@click.argument("run_dir", required=False, type=click.Path())
@click.option("--profile", help="Export a fresh network from this profile instead of a run.")
@click.option(
    "--data-dir",
    help="With --profile: the dataset folder (input shape, classes, "
    "preprocessing); a trained RUN_DIR holds them.",
)
@click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a profile setting (with --profile); repeatable.")  # fmt: skip
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--inference",
    is_flag=True,
    help="Write one ONNX model of all blocks and the final head (needs a trained RUN_DIR).",
)
@user_errors
def export(run_dir, profile, data_dir, settings, out, inference):
    """Export RUN_DIR (or --profile) for ONNX Runtime: per-block training artifacts and
    manifest.json for on-device training, or with --inference one prediction model."""
    from edge_svp.ort.commands import export as run_export

    config = None
    if profile:
        overrides = {"data.data_dir": data_dir, **parse_settings(settings)}
        config = override(load_profile(profile), **overrides)
    from edge_svp.progress import ConsoleReporter

    written = run_export(out, run_dir, config, inference, ConsoleReporter(0))
    click.echo(f"wrote {written}")


@main.command()
@user_errors
def profiles():
    """List the shipped training profiles."""
    for name in profile_names():
        config = load_profile(name)
        click.echo(f"{name:<20} {config.description}")


@main.group(invoke_without_command=True)
@click.pass_context
@user_errors
def targets(ctx):
    """List the shipped device targets (for --target); `targets detect` describes this
    machine in the same TOML format."""
    if ctx.invoked_subcommand:
        return
    from edge_svp.target import load_target, target_names

    rows = [["target", "device", "memory", "", "default budget", "precision"]]
    for name in target_names():
        t = load_target(name)
        kind = "unified" if t.unified_memory else "dedicated" if t.device == "cuda" else "RAM"
        rows.append([name, t.device, t.memory, kind, format_bytes(t.budget_bytes), t.precision])
    for row in rows:
        click.echo(f"{row[0]:<22} {row[1]:<6} {row[2]:>6} {row[3]:<9} {row[4]:>14}  {row[5]}")


@targets.command()
@user_errors
def detect():
    """Describe this machine as a target (TOML; save it and pass its path to --target)."""
    from edge_svp.target import detect_target, target_toml

    click.echo(target_toml(detect_target()), nl=False)


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for report.md and the PNG plots.")  # fmt: skip
@user_errors
def report(run_dirs, out):
    """Plots and a markdown summary of one or more run directories: accuracy against depth,
    loss and accuracy curves per block, memory per block against the budget, and a
    side-by-side table (needs the `report` extra: matplotlib)."""
    from edge_svp.report import write_report

    click.echo(f"wrote {write_report(list(run_dirs), out)}")
