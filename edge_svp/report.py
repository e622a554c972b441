"""Run reports: plots and a markdown summary of one or several run directories.

    write_report(["runs/mnist-svp", "runs/mnist-bp"], "reports/mnist")

writes into the output folder
    report.md             a side-by-side table of the runs, then every plot with what it shows
    accuracy-depth.png    test accuracy of each block's head against depth, all runs together
    curves-RUN.png        loss and train/test accuracy per block per epoch (metrics.jsonl)
    memory-RUN.png        predicted and measured peak per block against the budget line
                          (summary.json's memory section); backprop runs of the same report
                          appear as reference lines

Plots need matplotlib (the `report` extra); it draws headless (Agg), so no display is needed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from edge_svp.errors import EdgeSVPError
from edge_svp.files import staged_outputs

MIB = 2**20
REPORT = "report.md"


@dataclass
class Run:
    name: str  # unique within a report; names its plot files
    path: Path
    summary: dict
    metrics: list[dict]

    @property
    def schedule(self):
        from edge_svp.training import schedule_named

        return schedule_named(self.summary["schedule"])

    @property
    def label(self) -> str:
        return f"{self.name} ({self.schedule.label})"

    @property
    def is_bp(self) -> bool:
        """Trained end to end: only its last head is trained."""
        return not self.schedule.local


def read_run(path: str | Path, name: str | None = None) -> Run:
    """A finished run directory, or a one-line EdgeSVPError saying what is wrong with it."""
    path = Path(path)
    if not path.is_dir():
        raise EdgeSVPError(f"run directory {path} does not exist")
    if not (path / "config.toml").exists():
        raise EdgeSVPError(f"{path} is not a run directory (no config.toml)")
    try:
        summary = json.loads((path / "summary.json").read_text())
    except FileNotFoundError:
        raise EdgeSVPError(
            f"{path} has no summary.json: the run has not finished (continue it with "
            f"edge-svp fit --resume {path}; eval, export and predict read its last checkpoint)"
        ) from None
    except json.JSONDecodeError as e:
        raise EdgeSVPError(f"{path}/summary.json is not valid JSON: {e}") from None
    metrics_file = path / "metrics.jsonl"
    lines = metrics_file.read_text().splitlines() if metrics_file.exists() else []
    try:
        metrics = [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as e:
        raise EdgeSVPError(f"{metrics_file} is not valid JSON lines: {e}") from None
    return Run(name or path.resolve().name, path, summary, metrics)


def _unique_names(paths: list[Path]) -> list[str]:
    names, seen = [], {}
    for path in paths:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).resolve().name) or "run"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def _per_block(values) -> str:
    """'128 / 64 / 64', 'disk / disk / none': one entry per block, as a person writes it."""
    return " / ".join("none" if v is None else str(v) for v in values or []) or "none"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise EdgeSVPError(
            "reports need matplotlib, the report extra: pip install 'edge-svp[report]', or in "
            "a source checkout pip install -c constraints.txt -e '.[report]'"
        ) from None
    matplotlib.use("Agg")  # headless: files only, no display
    import matplotlib.pyplot as plt

    return plt


# --- plots ------------------------------------------------------------------------------


MARKERS = "osD^vP*X"


def plot_accuracy_depth(runs: list[Run], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    depth = max(len(r.summary["per_block_accuracy"]) for r in runs)
    for k, run in enumerate(runs):
        # runs side by side at each depth, each its own marker: equal numbers stay visible
        shift = 0.06 * (k - (len(runs) - 1) / 2)
        points = [(i + 1 + shift, 100 * a) for i, a in enumerate(run.summary["per_block_accuracy"])
                  if a is not None]  # fmt: skip
        label = run.label + (": last head only" if run.is_bp else "")
        ax.plot(*zip(*points, strict=True), marker=MARKERS[k % len(MARKERS)], label=label)
    ax.set_xticks(range(1, depth + 1))
    ax.set_xlabel("block (depth)")
    ax.set_ylabel("test accuracy of the block's head (%)")
    ax.set_title("Accuracy against depth")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(run: Run, path: Path) -> None:
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4.0))
    for block in sorted({m["block"] for m in run.metrics}):
        rows = [m for m in run.metrics if m["block"] == block]
        epochs = [m["epoch"] for m in rows]
        line = loss_ax.plot(epochs, [m["loss"] for m in rows], marker="o", label=f"block {block}")
        color = line[0].get_color()
        acc_ax.plot(epochs, [100 * m["test_accuracy"] for m in rows], marker="o", color=color,
                    label=f"block {block} test")  # fmt: skip
        acc_ax.plot(epochs, [100 * m["train_accuracy"] for m in rows], linestyle="--",
                    color=color, label=f"block {block} train")  # fmt: skip
    stage = " (each block's own epochs)" if run.schedule.per_block else ""
    loss_ax.set_title("Training loss" + (" (local loss)" if not run.is_bp else ""))
    loss_ax.set_xlabel("epoch" + stage)
    loss_ax.set_ylabel("mean loss over the epoch")
    acc_ax.set_title("Accuracy of each block's head")
    acc_ax.set_xlabel("epoch" + stage)
    acc_ax.set_ylabel("accuracy (%)")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(run.label)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_memory(run: Run, references: list[Run], path: Path) -> None:
    """Predicted and measured peak per block, the budget, and backprop runs' peaks."""
    plt = _pyplot()
    memory = run.summary["memory"]
    measured = [b / MIB for b in memory["measured_peak_bytes"]]
    predicted = [b / MIB for b in memory["predicted_peak_bytes"] or []]
    blocks = range(1, max(len(measured), len(predicted)) + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    width = 0.38
    if predicted:
        ax.bar([b - width / 2 for b in blocks], predicted, width, label="predicted (plan)",
               color="#9ecae1", edgecolor="#3182bd")  # fmt: skip
    ax.bar([b + width / 2 for b in blocks][: len(measured)], measured, width,
           label="measured", color="#3182bd")  # fmt: skip
    if memory["budget_bytes"]:
        ax.axhline(memory["budget_bytes"] / MIB, color="#d62728", linestyle="--",
                   label=f"budget {memory['budget_bytes'] / MIB:.1f} MiB")  # fmt: skip
    for ref in references:
        peak = max(ref.summary["memory"]["measured_peak_bytes"]) / MIB
        ax.axhline(peak, color="0.4", linestyle=":", label=f"{ref.name} peak {peak:.1f} MiB")
    ax.set_xticks(list(blocks))
    ax.set_xlabel("block")
    ax.set_ylabel(f"peak memory (MiB, {memory['kind'].replace('_', ' ')})")
    shared = run.schedule.shared_peak
    shared = f" ({run.schedule.label}: one measured peak for all blocks)" if shared else ""
    ax.set_title(f"Memory per block{shared}", fontsize="medium")
    # below the axes, where it hides no bar
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(run.label)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- the markdown summary ---------------------------------------------------------------


def _percent(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _mib(x) -> str:
    return "-" if x is None else f"{x / MIB:.1f}"


def comparison_table(runs: list[Run]) -> str:
    head = ["run", "method", "schedule", "profile", "dataset", "precision", "target", "epochs",
            "batch", "test acc %", "per-block acc %", "training peak MiB", "predicted MiB",
            "budget MiB", "peak memory MiB", "wall s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        s = run.summary
        memory = s.get("memory") or {}
        measured = memory.get("measured_peak_bytes") or []
        predicted = memory.get("predicted_peak_bytes") or []
        row = [
            run.name, s["method"], s["schedule"], s["profile"], s["dataset"],
            s.get("precision", "fp32"), s.get("target") or "-",
            "/".join(map(str, s.get("block_epochs") or [s["epochs"]])),
            str(s["batch_size"]), _percent(s["test_accuracy"]),
            " / ".join(_percent(a) for a in s["per_block_accuracy"]),
            _mib(max(measured, default=None)), _mib(max(predicted, default=None)),
            _mib(memory.get("budget_bytes")),
            f"{_mib(s['peak_memory_bytes'])} ({s['peak_memory_kind'].replace('_', ' ')})",
            f"{s['wall_seconds']:.1f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _memory_note(run: Run) -> str | None:
    """Why a run has no memory plot, or None when it has one."""
    memory = run.summary.get("memory")
    if not memory or not memory.get("measured_peak_bytes"):
        return (f"`{run.name}`: summary.json has no memory section (or no measured peaks: the "
                "ort backend measures none), so there is no memory plot.")  # fmt: skip
    if run.is_bp:
        peak = _mib(max(memory["measured_peak_bytes"]))
        return (f"`{run.name}`: backprop trains all blocks at once and follows no per-block "
                f"plan; its measured training peak is {peak} MiB (a reference line in the SVP "
                "runs' memory plots).")  # fmt: skip
    return None


def write_report(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Plots and report.md for `run_dirs` in folder `out`; returns the markdown's path."""
    if not run_dirs:
        raise EdgeSVPError("give at least one run directory")
    names = _unique_names([Path(p) for p in run_dirs])
    runs = [read_run(p, n) for p, n in zip(run_dirs, names, strict=True)]
    _pyplot()  # fail before writing anything when matplotlib is missing
    with staged_outputs(out) as staging:  # whole or not at all
        _write_report(runs, staging)
    return Path(out) / REPORT


def _write_report(runs: list, out: Path) -> None:
    bp_runs = [
        r for r in runs if r.is_bp and (r.summary.get("memory") or {}).get("measured_peak_bytes")
    ]
    md = ["# edge-svp run report", ""]
    md += ["Runs: " + ", ".join(f"`{r.path}`" for r in runs) + ".", ""]
    md += ["## Side by side", "", comparison_table(runs), ""]
    md += ["Training peak is the measured peak above the baseline taken before training "
           "(docs/memory.md); predicted is the memory planner's; peak memory is the whole "
           "process's.", ""]  # fmt: skip
    plot_accuracy_depth(runs, out / "accuracy-depth.png")
    md += ["## Accuracy against depth", "",
           "Test accuracy of each block's head (x: block, y: %). A backprop run trains only "
           "the last head, so it has one point.", "", "![accuracy against depth](accuracy-depth.png)",
           ""]  # fmt: skip
    md += ["## Loss and accuracy per block", ""]
    for run in runs:
        if not run.metrics:
            md += [f"`{run.name}`: metrics.jsonl is empty or missing, so there are no curves.", ""]
            continue
        plot_curves(run, out / f"curves-{run.name}.png")
        md += [f"### {run.label}", "",
               "Left: each block's mean training loss per epoch; right: its head's test "
               "accuracy (solid) and training accuracy (dashed).", "",
               f"![curves of {run.name}](curves-{run.name}.png)", ""]  # fmt: skip
    md += ["## Memory per block", ""]
    for run in runs:
        note = _memory_note(run)
        if note:
            md += [note, ""]
            continue
        plot_memory(run, [r for r in bp_runs if r is not run], out / f"memory-{run.name}.png")
        memory = run.summary["memory"]
        budget = (f"the budget {_mib(memory['budget_bytes'])} MiB (dashed red)"
                  if memory["budget_bytes"] else "no budget")  # fmt: skip
        within = "" if memory["within_budget"] else " **The measured peak exceeded the budget.**"
        md += [f"### {run.label}", "",
               f"Predicted (light) and measured (dark) peak of each block against {budget}; "
               f"micro-batches {_per_block(memory.get('micro_batch'))}, caches "
               f"{_per_block(memory.get('cache'))}."
               f"{within}", "", f"![memory of {run.name}](memory-{run.name}.png)", ""]  # fmt: skip
    (out / REPORT).write_text("\n".join(md))
