"""`edge-svp fit --nproc N`: start N ranks on this machine, as torchrun would, and watch them.

Each rank is `python -m edge_svp fit --profile RESOLVED.toml ...` with the environment
torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so
the launcher and torchrun run the same code (worker.py). When a rank fails, the launcher
stops the others at once and says in one line which rank failed and why; ranks whose peer
failed say so in a file the launcher reads (failure.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge_svp.config import RunConfig, config_to_dict, dump_toml
from edge_svp.distributed import DEFAULT_TIMEOUT
from edge_svp.distributed.failure import (
    EXIT_CODES,
    REPORT_ENV,
    resume_hint,
    set_resume_hint,
    stop_on_sigterm,
)
from edge_svp.distributed.schedule import PIPELINED
from edge_svp.distributed.stages import Layout
from edge_svp.errors import Interrupted
from edge_svp.files import atomic_write_text

POLL_SECONDS = 0.05
GRACE_SECONDS = 5.0  # after SIGTERM, before SIGKILL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_environment(rank: int, nproc: int, port: int, report_dir: str) -> dict:
    env = dict(os.environ)
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
               LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    env[REPORT_ENV] = report_dir
    # as torchrun does: share the cores out rather than let every rank use them all
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return env


def launch(
    config: RunConfig,
    nproc: int,
    stages: int | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    backend: str = "torch",
    resume: bool = False,
) -> tuple[int, str | None]:
    """Train `config` on `nproc` local ranks; returns (exit code, one-line reason or None).
    With `resume`, `out` is the run directory to go on with."""
    from edge_svp.rundir import RunDir, default_run_dir

    PIPELINED.check(config, backend)
    layout = Layout(nproc, stages or nproc)
    out = out or default_run_dir(config, PIPELINED)  # named here, so that a stop can name it
    set_resume_hint(RunDir(out).resume_command({"processes": nproc, "stages": layout.stages}),
                    out)  # fmt: skip
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    stop_on_sigterm("and every rank with it")
    # Ctrl-C stops the run, as it stops a fit of one process, even where the shell that
    # started this one left SIGINT ignored (a background job of a shell without job control)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code, reason = _launch(config, layout, out, overwrite, timeout, resume)
        if code == EXIT_CODES["error"] and (Path(out) / "config.toml").exists():
            reason = f"{reason}; {resume_hint()}"  # a rank failed in training: it can go on
        return code, reason
    except KeyboardInterrupt:  # Ctrl-C reaches every rank too: they stop with it
        raise Interrupted(f"stopped by Ctrl-C, and every rank with it; {resume_hint()}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _launch(config, layout: Layout, out, overwrite, timeout, resume) -> tuple[int, str | None]:
    nproc = layout.world
    with tempfile.TemporaryDirectory(prefix="edge-svp-") as tmp:
        cmd = [sys.executable, "-m", "edge_svp", "fit", "--stages", str(layout.stages),
               "--timeout", str(timeout)]  # fmt: skip
        if resume:
            cmd += ["--resume", str(out)]
        else:
            profile = Path(tmp) / "config.toml"
            atomic_write_text(profile, dump_toml(config_to_dict(config)))
            cmd += ["--profile", str(profile), "--out", str(out)]
        cmd += ["--overwrite"] if overwrite else []
        port = free_port()
        # Rank 0 speaks for the run. The others' stderr would only repeat, in the words of
        # gloo or NCCL, a peer's failure that the reports already name ("connection reset").
        with open(Path(tmp) / "ranks.err", "w") as quiet:
            procs = [subprocess.Popen(cmd, env=rank_environment(r, nproc, port, tmp),
                                      stderr=None if r == 0 else quiet)
                     for r in range(nproc)]  # fmt: skip
            try:
                return watch(procs, Path(tmp))
            finally:
                stop(procs)


def watch(procs: list[subprocess.Popen], report_dir: Path) -> tuple[int, str | None]:
    """Wait for every rank; at the first that fails, stop the rest and say which failed. A
    rank that stopped only because a peer failed can be first on a busy machine, while the
    peer is still writing why: the others get GRACE_SECONDS to finish on their own first."""
    grace = None
    while True:
        codes = [p.poll() for p in procs]
        if all(c == 0 for c in codes):
            return 0, None
        failed = [c for c in codes if c not in (None, 0)]
        if failed and any(c != EXIT_CODES["peer"] for c in failed):
            break
        if failed:
            grace = grace or time.monotonic() + GRACE_SECONDS
            if time.monotonic() > grace or None not in codes:
                break
        time.sleep(POLL_SECONDS)
    stopped = stop(procs)
    reports = {}
    for path in report_dir.glob("rank*.json"):
        reports[int(path.stem[4:])] = json.loads(path.read_text())
    return diagnose([p.returncode for p in procs], reports, stopped)


def stop(procs: list[subprocess.Popen]) -> set[int]:
    """SIGTERM every rank still running, SIGKILL after a grace period; the ranks stopped."""
    running = {r for r, p in enumerate(procs) if p.poll() is None}
    for r in running:
        procs[r].terminate()
    deadline = time.monotonic() + GRACE_SECONDS
    for r in running:
        try:
            procs[r].wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            procs[r].kill()
            procs[r].wait()
    return running


def diagnose(codes: list[int], reports: dict, stopped: set[int]) -> tuple[int, str]:
    """Which rank failed first, and why: its own report, a signal, or its peers' reports."""
    for r in reports.values():
        if r["kind"] == "input":  # bad input, found by a rank: said as a single run says it
            return EXIT_CODES["input"], r["message"]
    reason = next((f"rank {rank} failed: {r['message']}" for rank, r in sorted(reports.items())
                   if r["kind"] == "error"), None)  # fmt: skip
    for rank, code in enumerate(codes):
        if reason is None and code < 0 and rank not in stopped:
            reason = f"rank {rank} was killed by {signal.Signals(-code).name}"
    for rank, r in sorted(reports.items()):
        if reason is None and r["kind"] == "peer" and r["peer"] is not None:
            reason = f"{r['message']} (seen by rank {rank})"
    for rank, code in enumerate(codes):
        if reason is None and code not in (0, None) and rank not in stopped:
            reason = f"rank {rank} exited with code {code}"
    return EXIT_CODES["error"], f"{reason or 'a rank failed'}; the other ranks were stopped"
