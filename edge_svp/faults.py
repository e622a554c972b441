"""Fault injection for the crash and pipeline tests.

With EDGE_SVP_KILL_AT=POINT:N in the environment, the process sends itself SIGKILL the N-th
time it passes POINT, exactly as the OOM killer or a power cut would stop it there. Points:

    step               after an optimizer step, before any checkpoint of that step
    epoch              after an epoch's metrics are written, before its checkpoint
    stage              after a block-boundary checkpoint, before the old caches are removed
    checkpoint-write   after each chunk of a checkpoint's temporary file
    checkpoint-rename  between moving the latest checkpoint aside and renaming the new one in
    cache-write        after each chunk written to an activation cache on disk

With EDGE_SVP_FULL_DISK=write:N, the N-th file written through edge_svp/files.py (or the
N-th append to metrics.jsonl) fails with ENOSPC after its first bytes, as on a full disk.

With EDGE_SVP_FAULT=RANK:STEP[:MODE], pipeline rank RANK, at its training micro-step STEP
(counted from 0 over the whole run), raises an exception (MODE raise, the default), kills
itself with SIGKILL (kill) or stops answering (hang).

Unset (always, outside tests), every call is an environment lookup that does nothing.
"""

import errno
import os
import signal
import time

RANK_FAULT_ENV = "EDGE_SVP_FAULT"
FULL_DISK_ENV = "EDGE_SVP_FULL_DISK"

_passed: dict[str, int] = {}


def kill_point(name: str) -> None:
    point, _, at = os.environ.get("EDGE_SVP_KILL_AT", "").partition(":")
    if name != point:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == int(at or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def full_disk(name: str) -> bool:
    """Whether this pass of `name` is the one EDGE_SVP_FULL_DISK makes fail."""
    point, _, at = os.environ.get(FULL_DISK_ENV, "").partition(":")
    if name != point:
        return False
    key = FULL_DISK_ENV + name
    _passed[key] = _passed.get(key, 0) + 1
    return _passed[key] == int(at or 1)


def no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def rank_fault(rank: int):
    """A function of the micro-step that injects the fault EDGE_SVP_FAULT asks of this rank."""
    spec = os.environ.get(RANK_FAULT_ENV)
    if not spec:
        return lambda step: None
    target, at, *mode = spec.split(":")
    mode = mode[0] if mode else "raise"
    if int(target) != rank:
        return lambda step: None

    def hook(step: int) -> None:
        if step != int(at):
            return
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "hang":
            time.sleep(10**6)
        raise RuntimeError(f"injected fault at step {step} ({RANK_FAULT_ENV}={spec})")

    return hook
