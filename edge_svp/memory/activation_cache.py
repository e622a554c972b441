"""ActivationCache: the outputs of a frozen block over a whole split.

Where it lives is the planner's choice:
  device  a tensor on the training device (fastest, costs device memory)
  host    a tensor in host RAM
  disk    a file of fixed-size rows, read with positioned reads into small buffers; the
          kernel's page cache holds it, which the process's resident set does not count
Optionally stored as float16 (half the bytes); reads always return float32.
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
    ):
        if location not in LOCATIONS:
            raise ValueError(f"unknown cache location {location!r}")
        self.num_rows = num_rows
        self.row_shape = tuple(row_shape)
        self.location = location
        self.dtype = DTYPES[dtype]
        self.device = device or torch.device("cpu")
        self.row_elems = math.prod(self.row_shape)
        self.row_bytes = self.row_elems * self.dtype.itemsize
        self.path: Path | None = None
        if location == "disk":
            fd, name = tempfile.mkstemp(prefix="activations-", suffix=".bin", dir=directory)
            self.path = Path(name)
            self._file = os.fdopen(fd, "r+b", buffering=0)
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
            os.pwrite(self._file.fileno(), data, start * self.row_bytes)
        except OSError as e:
            raise EdgeSVPError(f"cannot write the activation cache {self.path}: {e}") from None

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

    def close(self) -> None:
        if self.path is not None:
            self._file.close()
            self.path.unlink(missing_ok=True)
            self.path = None
        self._rows = None

    def __del__(self):
        if getattr(self, "path", None) is not None:
            self.close()
