"""Files that survive a crash, and outputs checked before any work.

atomic_write: write a temporary file, fsync it, rename it over the target, fsync the
directory. A crash at any moment leaves either the old file or the new one, never a mix;
a failed write (a full disk) removes its temporary file and ends in one line (WriteFailed).
staged_outputs: the same for a folder of outputs (an export, a report).
No torch here: the ONNX Runtime paths write their outputs through it too.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from edge_svp.errors import EdgeSVPError, WriteFailed
from edge_svp.faults import full_disk, kill_point, no_space


class _HashingFile:
    """A write-only file that hashes what passes through it."""

    def __init__(self, file):
        self.file = file
        self.sha256 = hashlib.sha256()
        self.error: OSError | None = None  # what the disk said, if a writer swallows it
        self.fills_disk = full_disk("write")

    def write(self, data) -> int:
        self.sha256.update(data)
        try:
            n = self.file.write(data)
            if self.fills_disk:
                raise no_space()
        except OSError as e:  # torch.save turns it into a RuntimeError of its own
            self.error = e
            raise
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


def write_failed(path: Path, e: OSError) -> WriteFailed:
    reason = "no space left on device" if e.errno == errno.ENOSPC else e.strerror or str(e)
    return WriteFailed(f"cannot write {path}: {reason}")


def write_synced(path: Path, write: Callable, name: Path | None = None) -> str:
    """Write `path` with `write(file)` and fsync it; returns the SHA-256 of what was written.
    On any failure the file is removed (a half-written file would keep a full disk full)
    and the error names `name` (the file that `path` is to become) or `path`."""
    out = None
    try:
        with open(path, "wb") as f:
            out = _HashingFile(f)
            write(out)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        path.unlink(missing_ok=True)
        error = e if isinstance(e, OSError) else out and out.error
        if error:
            raise write_failed(name or path, error) from None
        raise
    return out.sha256.hexdigest()


def atomic_write(path: str | Path, write: Callable) -> str:
    """Write `path` with `write(file)` atomically; returns the SHA-256 of what was written."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    digest = write_synced(tmp, write, path)
    try:
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_failed(path, e) from None
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


STAGING = ".edge-svp-partial"


@contextmanager
def staged_outputs(out: str | Path) -> Iterator[Path]:
    """A folder to write a set of outputs into, moved into `out` only once all are written:
    a failure (a full disk, Ctrl-C) leaves `out` as it was, with no partial file under a
    final name. The folder lies inside `out`, so that the moves are renames on one disk;
    files of `out` that the outputs do not name stay."""
    out, made = Path(out), not Path(out).exists()
    make_dir(out)
    for stale in out.glob(STAGING + "-*"):  # of a process that was killed
        shutil.rmtree(stale, ignore_errors=True)
    staging = out / f"{STAGING}-{os.getpid()}"
    done = False
    try:
        staging.mkdir()
        yield staging
        for item in staging.iterdir():
            target = out / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)  # a folder cannot be renamed over a full one
            item.replace(target)
        fsync_dir(out)
        done = True
    except Exception as e:
        error = disk_error(e)
        if error is None:
            raise
        where = str(error.filename or out).replace(str(staging), str(out))  # as the user named it
        raise write_failed(Path(where), error) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if made and not done:
            with suppress(OSError):
                out.rmdir()  # only if empty


def disk_error(e: BaseException) -> OSError | None:
    """The OSError behind `e`: itself, or a full disk that a library written in C++
    (ONNX Runtime, torch) reports in the text of an exception of its own."""
    if isinstance(e, OSError):
        return e
    if "No space left on device" in str(e) or "errno:28" in str(e):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        digest = hashlib.sha256()
        while chunk := f.read(2**20):
            digest.update(chunk)
        return digest.hexdigest()
