"""Byte sizes as users write them: 512MB, 1.5GiB, 300000000."""

import re

from edge_svp.errors import EdgeSVPError

UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "k": 2**10, "m": 2**20, "g": 2**30,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Decimal (KB, MB, GB) and binary (KiB, MiB, GiB) units, case-insensitive; bare = bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = text, ""
    else:
        match = _SIZE.match(str(text))
        if not match or match.group(2).lower() not in UNITS:
            raise EdgeSVPError(
                f"cannot read '{text}' as a memory size; use e.g. 512MB, 1.5GiB or 300000000"
            )
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * UNITS[unit])
    if size <= 0:
        raise EdgeSVPError(f"memory size must be positive, got '{text}'")
    return size


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
