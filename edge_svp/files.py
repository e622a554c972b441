"""Files that survive a crash, and outputs checked before any work.

atomic_write: write a temporary file, fsync it, rename it over the target, fsync the
directory. A crash at any moment leaves either the old file or the new one, never a mix.
No torch here: the ONNX Runtime paths write their outputs through it too.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from edge_svp.errors import EdgeSVPError
from edge_svp.faults import kill_point


class _HashingFile:
    """A write-only file that hashes what passes through it."""

    def __init__(self, file):
        self.file = file
        self.sha256 = hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        n = self.file.write(data)
        kill_point("checkpoint-write")
        return n

    def flush(self) -> None:
        self.file.flush()


def fsync_dir(directory: Path) -> None:
    """Make renames in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, write: Callable) -> str:
    """Write `path` with `write(file)` and fsync it; returns the SHA-256 of what was written."""
    try:
        with open(path, "wb") as f:
            out = _HashingFile(f)
            write(out)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        path.unlink(missing_ok=True)
        raise EdgeSVPError(f"cannot write {path}: {e.strerror or e}") from None
    return out.sha256.hexdigest()


def atomic_write(path: str | Path, write: Callable) -> str:
    """Write `path` with `write(file)` atomically; returns the SHA-256 of what was written."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    digest = write_synced(tmp, write)
    try:
        tmp.replace(path)
    except OSError as e:
        raise EdgeSVPError(f"cannot write {path}: {e.strerror or e}") from None
    fsync_dir(path.parent)
    return digest


def writable(directory: Path) -> None:
    """Try a temporary file in `directory`: the one test that root, read-only mounts and
    immutable folders all answer truthfully."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise EdgeSVPError(f"cannot write to {directory}: {e.strerror}") from None


def check_new_dir(path: str | Path) -> None:
    """Refuse, in one line and before any work, an output directory that cannot be made or
    written; nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EdgeSVPError(f"{path} is a file, not a directory")
    existing = path
    while not existing.exists():  # a new directory: its nearest existing parent
        existing = existing.parent
    if not existing.is_dir():
        raise EdgeSVPError(f"cannot create {path}: {existing} is not a directory")
    writable(existing)


def make_dir(path: str | Path) -> Path:
    """`path` as a directory, made if need be; a one-line error if it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeSVPError(f"cannot create {path}: {e.strerror or e}") from None
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        digest = hashlib.sha256()
        while chunk := f.read(2**20):
            digest.update(chunk)
        return digest.hexdigest()
