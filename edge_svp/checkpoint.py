"""A run's checksummed checkpoints, written through edge_svp/files.py's atomic writes.

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

import json
from collections.abc import Callable
from pathlib import Path

import torch

from edge_svp.errors import EdgeSVPError, WriteFailed
from edge_svp.faults import kill_point
from edge_svp.files import (
    atomic_write_text,
    file_sha256,
    fsync_dir,
    write_failed,
    write_synced,
)

LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
DIGESTS = "checkpoints.json"


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
        digest = write_synced(tmp, lambda f: torch.save(checkpoint, f), latest)
        old = self._digests() or {}
        # the file that will be checkpoint.prev.pt: the latest, or (if a crash took it) the
        # previous one, which then stays where it is
        digests = {LATEST: digest, PREVIOUS: old.get(LATEST if latest.exists() else PREVIOUS)}
        try:
            atomic_write_text(self.directory / DIGESTS, json.dumps(digests, indent=2) + "\n")
        except WriteFailed:  # the checkpoints and their digests stay as they were
            tmp.unlink(missing_ok=True)
            raise
        try:
            if latest.exists():
                latest.replace(previous)
            kill_point("checkpoint-rename")
            tmp.replace(latest)
        except OSError as e:
            raise write_failed(latest, e) from None
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
