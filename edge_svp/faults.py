"""Fault injection for the crash tests.

With EDGE_SVP_KILL_AT=POINT:N in the environment, the process sends itself SIGKILL the N-th
time it passes POINT, exactly as the OOM killer or a power cut would stop it there. Points:

    step               after an optimizer step, before any checkpoint of that step
    epoch              after an epoch's metrics are written, before its checkpoint
    stage              after a block-boundary checkpoint, before the old caches are removed
    checkpoint-write   after each chunk of a checkpoint's temporary file
    checkpoint-rename  between moving the latest checkpoint aside and renaming the new one in
    cache-write        after each chunk written to an activation cache on disk

Unset (always, outside tests), every call is an environment lookup that does nothing.
"""

import os
import signal

_passed: dict[str, int] = {}


def kill_point(name: str) -> None:
    point, _, at = os.environ.get("EDGE_SVP_KILL_AT", "").partition(":")
    if name != point:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == int(at or 1):
        os.kill(os.getpid(), signal.SIGKILL)
