"""Memory: sizes, measurement, the per-block planner and the activation cache."""

from edge_svp.memory.meter import (
    MemoryMeter,
    cap_device_memory,
    current_rss_bytes,
    peak_memory_bytes,
    peak_rss_bytes,
    predictable_host_allocator,
    release_memory,
)
from edge_svp.memory.size import format_bytes, parse_size

__all__ = [
    "MemoryMeter",
    "cap_device_memory",
    "current_rss_bytes",
    "format_bytes",
    "parse_size",
    "peak_memory_bytes",
    "peak_rss_bytes",
    "predictable_host_allocator",
    "release_memory",
]
