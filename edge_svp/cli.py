"""The `edge-svp` command: a thin layer over edge_svp.run and edge_svp.config."""

from __future__ import annotations

import functools
import json
import sys

import click

from edge_svp.config import load_profile, override, parse_settings, profile_names
from edge_svp.errors import EdgeSVPError
from edge_svp.memory import format_bytes


def user_errors(fn):
    """Bad input ends in one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgeSVPError as e:
            click.echo(f"edge-svp: error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("\nedge-svp: interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edge-svp")
def main():
    """Train networks block by block with Stochastic Variational Propagation (SVP)."""


def _percent(x) -> str:
    return "  -  " if x is None else f"{100 * x:.2f}%"


def _echo_accuracy(result: dict) -> None:
    heads = "  ".join(f"{i + 1}: {_percent(a)}" for i, a in enumerate(result["per_block_accuracy"]))
    click.echo(f"per-block test accuracy  {heads}")
    click.echo(f"test accuracy            {_percent(result['test_accuracy'])}")


@main.command()
@click.option(
    "--profile",
    default="digits-mlp",
    show_default=True,
    help="Training recipe: a name from `edge-svp profiles` or a path to a TOML file.",
)
@click.option("--dataset", help="Dataset: digits, mnist, fashion-mnist, cifar10 or imagefolder.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=True, dir_okay=True),
    help="Folder holding the dataset files (for imagefolder: the folder or zip itself).",
)
@click.option(
    "--method",
    type=click.Choice(["svp", "bp"]),
    help="svp: block-local SVP learning; bp: end-to-end backprop baseline.",
)
@click.option(
    "--schedule",
    type=click.Choice(["joint", "layerwise"]),
    help="SVP schedule: all blocks per batch (joint) or one block after another.",
)
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (per block for layerwise).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Mini-batch size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate.")
@click.option("--seed", type=int, help="Seed for weights, projections and data order.")
@click.option(
    "--train-limit",
    type=click.IntRange(min=1),
    help="Train on the first N training examples only (quick trials).",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    help="Where to train (default: the profile's, usually auto).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Run directory (default: runs/<profile>-<schedule>-<time>).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option(
    "--backend",
    type=click.Choice(["torch", "ort"]),
    default="torch",
    show_default=True,
    help="Train with torch, or with ONNX Runtime training (SVP layerwise; the ort extra).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override any profile setting, e.g. --set svp.beta=0.1 --set model.widths=[500,500]. "
    "VALUE is a TOML value; repeatable.",
)
@user_errors
def fit(
    profile,
    dataset,
    data_dir,
    method,
    schedule,
    epochs,
    batch_size,
    lr,
    seed,
    train_limit,
    device,
    out,
    overwrite,
    backend,
    settings,
):
    """Train a network and write a run directory.

    The profile gives every setting; the options above override it. With no options this
    trains an SVP MLP on scikit-learn's digits, which needs no download.
    """
    from edge_svp.progress import ConsoleReporter
    from edge_svp.run import fit as run_fit

    config = override(
        load_profile(profile),
        **{
            "data.dataset": dataset,
            "data.data_dir": data_dir,
            "data.train_limit": train_limit,
            "train.method": method,
            "train.schedule": schedule,
            "train.epochs": epochs,
            "train.batch_size": batch_size,
            "train.seed": seed,
            "train.device": device,
            "optim.lr": lr,
            **parse_settings(settings),
        },
    )
    what = "backprop" if config.train.method == "bp" else f"SVP {config.train.schedule}"
    click.echo(
        f"{what} ({backend}) | profile {config.profile} | dataset {config.data.dataset} | "
        f"{config.model.kind} | {config.train.epochs} epochs, batch {config.train.batch_size}"
    )
    summary = run_fit(config, out, overwrite, ConsoleReporter(config.train.epochs), backend)
    _echo_accuracy(summary)
    click.echo(
        f"peak memory              {format_bytes(summary['peak_memory_bytes'])} "
        f"({summary['peak_memory_kind'].replace('_', ' ')})"
    )
    click.echo(f"wall time                {summary['wall_seconds']:.1f} s")
    click.echo(f"saved to                 {summary['run_dir']}")


@main.command("eval")
@click.argument("run_dir", type=click.Path())
@click.option("--data-dir", help="Dataset folder, if it moved since training.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@user_errors
def eval_(run_dir, data_dir, as_json):
    """Reload RUN_DIR's checkpoint and measure its test accuracy."""
    from edge_svp.run import evaluate_run

    result = evaluate_run(run_dir, data_dir)
    if as_json:
        click.echo(json.dumps(result))
        return
    _echo_accuracy(result)


@main.command()
@click.argument("run_dir", required=False, type=click.Path())
@click.option("--profile", help="Export a fresh network from this profile instead of a run.")
@click.option("--data-dir", help="Dataset folder (input shape, classes, preprocessing).")
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
    written = run_export(out, run_dir, config, inference, data_dir if run_dir else None)
    click.echo(f"wrote {written}")


@main.command()
@user_errors
def profiles():
    """List the shipped training profiles."""
    for name in profile_names():
        config = load_profile(name)
        click.echo(f"{name:<20} {config.description}")
