"""ActivationCache: the outputs of a frozen block over a whole split.

Where it lives is the planner's choice:
  device  a tensor on the training device (fastest, costs device memory)
  host    a tensor in host RAM
  disk    a file of fixed-size rows, read with positioned reads into small buffers; the
          kernel's page cache holds it, which the process's resident set does not count
Optionally stored as float16 (half the bytes); reads always return float32.

A run keeps its disk caches at fixed paths: `seal` makes a filled one durable and describes
it (with its SHA-256) for the checkpoint's cache manifest, and a resumed run reopens it
(`reopen=True`) once `damaged` finds it intact.
"""

from __future__ import annotations

import math
import os
import queue
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from edge_svp.errors import EdgeSVPError
from edge_svp.faults import kill_point
from edge_svp.files import file_sha256

LOCATIONS = ("device", "host", "disk")
DTYPES = {"float32": torch.float32, "float16": torch.float16}


class ActivationCache:
    def __init__(
        self,
        num_rows: int,
        row_shape: tuple[int, ...],
        location: str,
        dtype: str = "float32",
        device: torch.device | None = None,
        directory: str | Path | None = None,
        path: str | Path | None = None,
        reopen: bool = False,
    ):
        """A disk cache lives in a fresh temporary file in `directory`, or at `path`, which
        is created, or with `reopen` opened as it is."""
        if location not in LOCATIONS:
            raise ValueError(f"unknown cache location {location!r}")
        self.num_rows = num_rows
        self.row_shape = tuple(row_shape)
        self.location = location
        self.dtype_name = dtype
        self.dtype = DTYPES[dtype]
        self.device = device or torch.device("cpu")
        self.row_elems = math.prod(self.row_shape)
        self.row_bytes = self.row_elems * self.dtype.itemsize
        self.path: Path | None = None
        self._temporary = path is None  # a run's own cache file outlives a crashed process
        if location == "disk":
            try:
                if path is None:
                    fd, name = tempfile.mkstemp(prefix="activations-", suffix=".bin", dir=directory)
                    self._file = os.fdopen(fd, "r+b", buffering=0)
                    path = name
                else:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    self._file = open(path, "r+b" if reopen else "w+b", buffering=0)
            except OSError as e:
                where = path or directory or tempfile.gettempdir()
                raise EdgeSVPError(
                    f"cannot create an activation cache in {where}: {e.strerror}"
                ) from None
            self.path = Path(path)
            self._np_dtype = np.float16 if self.dtype == torch.float16 else np.float32
        else:
            where = self.device if location == "device" else torch.device("cpu")
            self._rows = torch.empty((num_rows, *self.row_shape), dtype=self.dtype, device=where)

    @property
    def nbytes(self) -> int:
        return self.num_rows * self.row_bytes

    def write(self, start: int, rows: torch.Tensor) -> None:
        """Store `rows` at positions start, start + 1, ..."""
        rows = rows.detach().to(self.dtype)
        if self.location != "disk":
            self._rows[start : start + len(rows)] = rows.to(self._rows.device)
            return
        data = rows.cpu().contiguous().numpy().tobytes()
        try:
            written = os.pwrite(self._file.fileno(), data, start * self.row_bytes)
        except OSError as e:
            raise EdgeSVPError(
                f"cannot write the activation cache {self.path}: {e.strerror or e}"
            ) from None
        if written != len(data):  # only a full disk writes short
            raise EdgeSVPError(f"cannot write the activation cache {self.path}: the disk is full")
        kill_point("cache-write")

    def read(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows `idx` as float32 on the cache's device."""
        if self.location != "disk":
            return self._rows[idx.to(self._rows.device)].to(self.device, torch.float32)
        out = np.empty((len(idx), self.row_elems), dtype=self._np_dtype)
        fd = self._file.fileno()
        for i, row in enumerate(idx.tolist()):
            chunk = os.pread(fd, self.row_bytes, row * self.row_bytes)
            if len(chunk) != self.row_bytes:
                raise EdgeSVPError(f"activation cache {self.path} is truncated at row {row}")
            out[i] = np.frombuffer(chunk, dtype=self._np_dtype)
        rows = torch.from_numpy(out).reshape(len(idx), *self.row_shape)
        return rows.to(self.device, torch.float32)

    def stream(self, batches: Iterable[torch.Tensor], depth: int = 2) -> Iterator[tuple]:
        """(idx, rows) for each index batch, read ahead by a background thread."""
        if self.location == "device":
            for idx in batches:
                yield idx, self.read(idx)
            return
        q: queue.Queue = queue.Queue(maxsize=depth)
        stop = threading.Event()

        def produce():
            try:
                for idx in batches:
                    if stop.is_set():
                        return
                    q.put((idx, self.read(idx)))
                q.put(None)
            except BaseException as e:  # hand the failure to the consumer
                q.put(e)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(0.01)

    def seal(self) -> dict:
        """Once filled: fsync a disk cache, and describe the cache for a manifest."""
        entry = {
            "location": self.location,
            "rows": self.num_rows,
            "row_shape": list(self.row_shape),
            "dtype": self.dtype_name,
            "file": None,
            "bytes": self.nbytes,
            "sha256": None,
        }
        if self.location == "disk":
            try:
                os.fsync(self._file.fileno())
            except OSError as e:
                raise EdgeSVPError(f"cannot write the activation cache {self.path}: {e}") from None
            entry["file"], entry["sha256"] = self.path.name, file_sha256(self.path)
        return entry

    def close(self) -> None:
        if self.path is not None:
            self._file.close()
            self.path.unlink(missing_ok=True)
            self.path = None
        self._rows = None

    def __del__(self):
        if getattr(self, "path", None) is not None:
            if self._temporary:
                self.close()
            else:  # kept for a resumed run, which removes it when it is done with it
                self._file.close()


def damaged(entry: dict, path: Path) -> str | None:
    """Why the file at `path` does not hold the cache `entry` describes, or None."""
    if not path.exists():
        return f"{path.name} is missing"
    if path.stat().st_size != entry["bytes"]:
        return f"{path.name} is truncated ({path.stat().st_size} of {entry['bytes']} bytes)"
    if file_sha256(path) != entry["sha256"]:
        return f"{path.name} fails its checksum"
    return None
