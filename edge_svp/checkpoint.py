"""Files that survive a crash: atomic writes, and a run's checksummed checkpoints.

atomic_write: write a temporary file, fsync it, rename it over the target, fsync the
directory. A crash at any moment leaves either the old file or the new one, never a mix.

CheckpointStore keeps two checkpoints of a run and their SHA-256 digests:

    checkpoint.pt        the latest
    checkpoint.prev.pt   the one before it
    checkpoints.json     digests of both, replaced atomically before either file moves

A file counts only if its digest is listed, so a truncated or corrupt checkpoint is
detected, and the previous good one is used with a message that says so. Writing a new
checkpoint first lists its digest next to the current one's, then moves the current file to
checkpoint.prev.pt and the new one to checkpoint.pt: whatever step a crash interrupts, one
of the two files matches a listed digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from edge_svp.errors import EdgeSVPError
from edge_svp.faults import kill_point

LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
DIGESTS = "checkpoints.json"


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


def read_checkpoint(path: Path) -> dict:
    """torch.load a checkpoint, with one-line errors; it must hold a state dict."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise EdgeSVPError(f"checkpoint not found: {path}") from None
    except Exception as e:  # torch raises many kinds for a damaged file
        raise EdgeSVPError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise EdgeSVPError(f"{path} is not an edge-svp checkpoint")
    return checkpoint


class CheckpointStore:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def _digests(self) -> dict | None:
        """{file name: digest}, or None for a run written before checksums existed."""
        path = self.directory / DIGESTS
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}  # unreadable: no checkpoint can be trusted

    def write(self, checkpoint: dict) -> None:
        latest, previous = self.directory / LATEST, self.directory / PREVIOUS
        tmp = self.directory / (LATEST + ".tmp")
        digest = write_synced(tmp, lambda f: torch.save(checkpoint, f))
        old = self._digests() or {}
        # the file that will be checkpoint.prev.pt: the latest, or (if a crash took it) the
        # previous one, which then stays where it is
        digests = {LATEST: digest, PREVIOUS: old.get(LATEST if latest.exists() else PREVIOUS)}
        atomic_write_text(self.directory / DIGESTS, json.dumps(digests, indent=2) + "\n")
        try:
            if latest.exists():
                latest.replace(previous)
            kill_point("checkpoint-rename")
            tmp.replace(latest)
        except OSError as e:
            raise EdgeSVPError(f"cannot write {latest}: {e.strerror or e}") from None
        fsync_dir(self.directory)

    def read(self, warn: Callable[[str], None] | None = None) -> dict | None:
        """The latest good checkpoint, or None if the run has none yet. A damaged latest
        checkpoint is reported through `warn` and the previous one is used instead."""
        digests = self._digests()
        listed = set((digests or {}).values())
        problems = []
        for name in (LATEST, PREVIOUS):
            path = self.directory / name
            if not path.exists():
                if name == LATEST and (self.directory / PREVIOUS).exists():
                    problems.append(f"{name} is missing")
                continue
            if digests is not None and file_sha256(path) not in listed:
                problems.append(f"{name} fails its checksum (truncated or corrupt)")
                continue
            try:
                checkpoint = read_checkpoint(path)
            except EdgeSVPError as e:
                problems.append(str(e))
                continue
            if problems and warn:
                warn(f"{'; '.join(problems)}: using the previous good checkpoint {name}")
            return checkpoint
        if problems:
            raise EdgeSVPError(
                f"no usable checkpoint in {self.directory}: {'; '.join(problems)}; "
                "start the run again with --overwrite"
            )
        return None
