"""Helpers for the benchmark scripts: run `edge-svp fit` in its own process, read the summary,
print a table and write JSON. Each configuration runs in a fresh process, so that peak memory
is measured per configuration."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# EDGE_SVP_BENCH_OUT=DIR writes results to DIR/results and run directories to DIR/runs, so a
# rehearsal or another machine's run leaves the recorded results and others' runs alone
OUT = os.environ.get("EDGE_SVP_BENCH_OUT")
RESULTS = Path(OUT).resolve() / "results" if OUT else ROOT / "bench" / "results"
RUNS = Path(OUT).resolve() / "runs" if OUT else ROOT / "runs" / "bench"
DISK_ONLY = ["--host-budget", "1"]  # one byte of host RAM: every cache goes to disk
# cifar10-cnn's SVP head before its study (docs/ablation.md); the profile now ships "pool 4 +
# d0 512 + head mlp". A smaller floor, at some accuracy
EARLIER_CNN_HEAD = ["--set", "svp.pool_size=2", "--set", "svp.proj_dim=64",
                    "--set", "svp.head=linear"]  # fmt: skip


# Probes in two processes measure a step a little differently (resident memory on CPU): a
# budget exactly at one process's prediction can be refused by the other's.
PROBE_SPREAD = 0.02


def plan(args: list[str]) -> dict:
    """`edge-svp plan ARGS --json`, in its own process."""
    cmd = [sys.executable, "-m", "edge_svp", "plan", *args, "--json"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"edge-svp plan {' '.join(args)} failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def tight_budget(base: list[str], micro: int) -> int:
    """The planner's predicted layerwise peak for micro-batch `micro`, caches on disk, with
    the margin the plan keeps below a budget, plus PROBE_SPREAD: a budget just large enough
    for that micro-batch."""
    layerwise = plan([*base, "--schedule", "layerwise", "--batch-size", str(micro), *DISK_ONLY])
    return int((layerwise["predicted_peak"] + layerwise["margin"]) * (1 + PROBE_SPREAD))


# A budget larger than any this machine has: the plan is then made with every option open
# (backprop may recompute activations), and its "min_budget" is the method's smallest.
ANY_BUDGET = "1TB"


def smallest_budget(args: list[str]) -> int:
    """The smallest budget under which the planner trains ARGS (with every option open)."""
    return plan([*args, "--mem-budget", ANY_BUDGET])["min_budget"]


def fit(name: str, args: list[str], group: str, reuse: bool = False, refusable: bool = False):
    """Run `edge-svp fit ARGS` into runs/bench/GROUP/NAME and return its summary; with
    `refusable`, a refusal (exit 2) returns its one line instead.

    With `reuse`, a finished run of the same command line is read instead of run again."""
    out = RUNS / group / name
    done = out / "summary.json"
    if reuse and done.exists() and (out / "args.json").exists():
        if json.loads((out / "args.json").read_text()) == args:
            print(f"reusing {out}", flush=True)
            return json.loads(done.read_text())
    cmd = [sys.executable, "-m", "edge_svp", "fit", *args, "--out", str(out), "--overwrite"]
    print(f"$ edge-svp fit {' '.join(args)}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if refusable and proc.returncode == 2:
        return proc.stderr.strip()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
    (out / "args.json").write_text(json.dumps(args))
    return json.loads(done.read_text())


def slug(name: str) -> str:
    """A configuration's name as part of a run directory's ("svp layerwise, aux 2" ->
    "svp-layerwise-aux-2"; "epochs 10/10/3" -> "epochs-10-10-3": no "/" to make a folder)."""
    return re.sub(r"[^\w.]+", "-", name)


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A markdown table; `columns` are (header, key) pairs."""
    lines = [
        "| " + " | ".join(h for h, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(k, "")) for _, k in columns) + " |")
    return "\n".join(lines)


def results_name(name: str, settings: list[str]) -> str:
    """`name`, then the value of each SECTION.KEY=VALUE setting (flops-hadamard), or its key
    and value where the value alone says nothing (flops-attention_norm_affine-false)."""
    parts = []
    for setting in settings:
        key, value = setting.split("=", 1)
        value = value.strip('"')
        parts.append(f"{key.split('.')[-1]}-{value}" if value in ("true", "false") else value)
    return "-".join([name, *parts])


def write_results(name: str, payload: dict) -> Path:
    """bench/results/NAME.json, which says which command wrote it (unless `payload` names
    its own: a merged file keeps every run's)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"command": shlex.join(["python", *sys.argv]), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def plot_lines(path: Path, lines: dict[str, list[tuple]], xlabel: str, ylabel: str,
               log_x: bool = False, xticks: list | None = None) -> bool:  # fmt: skip
    """One line per entry of `lines` ({label: [(x, y), ...]}), saved as a PNG at `path`;
    False where matplotlib (the report extra) is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # headless: files only
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in lines.items():
        if points:
            ax.plot(*zip(*sorted(points), strict=True), marker="o", label=label)
    if log_x:
        ax.set_xscale("log")
    if xticks:
        ax.set_xticks(xticks)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
