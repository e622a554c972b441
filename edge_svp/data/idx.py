"""The IDX file format (MNIST's), gzip-compressed or raw: numpy only, so that inputs for a
prediction read without torch (inputs.py)."""

import gzip
from pathlib import Path

import numpy as np

from edge_svp.errors import EdgeSVPError


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file: 2 zero bytes, a type byte (0x08 = uint8), rank, then big-endian dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise EdgeSVPError(f"cannot read {path}: {e}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise EdgeSVPError(f"{path} is not a uint8 IDX file (bad header)")
    rank = data[3]
    header = 4 + 4 * rank
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise EdgeSVPError(
            f"{path} is truncated or corrupt: {len(data)} bytes, header says {expected}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()
