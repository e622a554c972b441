"""When a rank fails: what it tells the others.

A rank that fails writes one line saying why to the rendezvous store, so that the ranks it
leaves waiting can name it, and either to the file the local launcher reads
(edge_svp/distributed/launch.py) or, under torchrun, to stderr. A rank whose peer failed
stops with exit code 3; waits between ranks end after the timeout, so nothing hangs.

The tests of all this inject failures with edge_svp/faults.py (rank_fault).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from edge_svp.errors import Interrupted

REPORT_ENV = "EDGE_SVP_REPORT_DIR"  # set by the local launcher: where ranks say why they stopped
NOTE_KEY = "edge_svp/failure"
EXIT_CODES = {"error": 1, "input": 2, "peer": 3, "signal": 143}


class PeerFailure(Exception):
    """Another rank failed, or did not answer within the timeout; this rank stops too."""

    def __init__(self, peer: int | None, detail: str):
        super().__init__(detail)
        self.peer = peer


def note(store) -> str | None:
    """What a failed rank left in the store, if anything; not asked under the local launcher,
    which reads every rank's report itself (and whose store may have gone with rank 0)."""
    if store is None or os.environ.get(REPORT_ENV):
        return None
    try:
        return store.get(NOTE_KEY).decode() if store.check([NOTE_KEY]) else None
    except Exception:  # the store lives in a rank that may be gone
        return None


def report(rank: int, kind: str, message: str, peer: int | None = None, store=None) -> int:
    """Say why this rank stops; returns its exit code."""
    folder = os.environ.get(REPORT_ENV)
    # The store is for torchrun's ranks only (the local launcher reads the reports; see
    # note): it lives in rank 0, which may be gone already, and then setting it waits.
    if kind not in ("peer", "signal") and store is not None and not folder:
        try:
            store.set(NOTE_KEY, f"rank {rank} failed: {message}")
        except Exception:
            pass
    if folder:
        record = {"kind": kind, "message": message, "peer": peer}
        (Path(folder) / f"rank{rank}.json").write_text(json.dumps(record))
    else:
        prefix = (
            "" if kind == "input"
            else f"rank {rank} {'failed' if kind == 'error' else 'stopped'}: "
        )  # fmt: skip
        print(f"edge-svp: error: {prefix}{message}", file=sys.stderr, flush=True)
    return EXIT_CODES[kind]


# How a stopped pipeline goes on: (the command, its run directory), once they are known.
_resume = [None]


def set_resume_hint(command: str, run_dir: Path) -> None:
    """From now on, a stop names `command`, which continues the run in `run_dir`."""
    _resume[0] = (command, Path(run_dir))


def resume_hint() -> str:
    """What a stop leaves, and the command that goes on from there."""
    if _resume[0] is None:
        return "it stopped during set-up, before anything was written"
    command, run_dir = _resume[0]
    if (run_dir / "checkpoint.pt").exists():
        return f"the checkpoint of its last finished epoch is kept; resume with: {command}"
    return f"no epoch had finished, so it starts over with: {command}"


def stop_on_sigterm(who: str) -> None:
    """SIGTERM (systemd, Docker, a job scheduler; torchrun passes it on) stops `who` at once
    with Interrupted (exit code 143); the checkpoint of its last finished epoch stays, and the
    run resumes from it (resume_hint)."""

    def terminated(signum, frame):
        raise Interrupted(f"stopped by SIGTERM, {who}; {resume_hint()}", 143)

    signal.signal(signal.SIGTERM, terminated)


def first_line(e: Exception) -> str:
    return (str(e).splitlines() or [""])[0]
