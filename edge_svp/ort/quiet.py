"""Silence native code that writes straight to the process's file descriptors."""

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet(*fds: int):
    """Point `fds` (1 stdout, 2 stderr) at /dev/null for the duration.

    Needed because ORT's gradient builder prints ~35 INFO lines to fd 2 per graph (it
    ignores onnxruntime.set_default_logger_severity), and torch's TorchScript exporter dumps
    its whole IR graph to fd 1 before it raises on an op it cannot export.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(devnull, fd)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)
