"""A user-level cache of decoded arrays, so that a second run starts fast.

Location: $EDGE_SVP_CACHE, else $XDG_CACHE_HOME/edge-svp, else ~/.cache/edge-svp. The key
covers the source files' paths, sizes and modification times, so a changed file is decoded
again. Writes are atomic; an unreadable cache entry is rebuilt.
"""

import hashlib
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    if os.environ.get("EDGE_SVP_CACHE"):
        return Path(os.environ["EDGE_SVP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edge-svp"


def cached_arrays(
    name: str, sources: list[Path], build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    key = hashlib.sha256()
    for src in sorted(sources):
        st = src.stat()
        key.update(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    path = cache_dir() / f"{name}-{key.hexdigest()[:16]}.npz"
    if path.exists():
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile):
            pass  # damaged entry: rebuild it below
    arrays = build()
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        tmp.replace(path)
    except OSError:  # a read-only or full cache only costs the next run its decode time
        tmp.unlink(missing_ok=True)
    return arrays
