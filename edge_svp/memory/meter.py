"""Peak memory as measured, never estimated.

CUDA: the caching allocator's peak (torch.cuda.max_memory_allocated), reset per block.
CPU: the process's resident set. A background thread samples VmRSS, and the kernel's
high-water mark (VmHWM, reset per block through /proc/self/clear_refs) catches any peak
between samples. Budgets on CPU count memory above a baseline taken after imports and data
loading, so the interpreter, torch itself and the dataset are not charged to training.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# mallopt parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_rss_bytes() -> int:
    rss = _status_kib("VmRSS")
    if rss is None:
        import psutil

        rss = psutil.Process().memory_info().rss
    return rss


def peak_rss_bytes() -> int:
    """The OS high-water mark of this process's resident set."""
    peak = _status_kib("VmHWM")
    if peak is not None:
        return peak
    # ru_maxrss is in kilobytes on Linux, bytes on macOS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# The two settings of glibc's allocator (mallopt parameter: value). Both keep one arena for
# all threads: glibc otherwise gives every thread that allocates (the meter's sampler, the
# cache's prefetcher, OpenMP workers) an arena of its own, each holding freed memory.
EXACT_HOST_ALLOCATOR = {
    M_ARENA_MAX: 1,
    # every tensor of 16 KiB or more in a mapping of its own, returned to the OS when freed.
    # At 64 KiB the many smaller tensors of a micro-batch of 1 (a dim-64 ViT's 64 x 64
    # activations) came from the heap, whose freed pieces stay resident: a 16-block ViT with
    # auxiliary layers measured 8.3-9.2 MiB against 4.2-4.4 predicted, over a 7.5 MiB budget
    M_MMAP_THRESHOLD: 16 * 1024,
    M_TRIM_THRESHOLD: 128 * 1024,  # glibc's default, fixed
}
REUSING_HOST_ALLOCATOR = {
    M_ARENA_MAX: 1,
    # where glibc's own sliding thresholds end up once large blocks have been freed
    # (malloc.h: DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, and twice that), fixed from the start
    M_MMAP_THRESHOLD: 32 * 2**20,
    M_TRIM_THRESHOLD: 64 * 2**20,
}


def set_host_allocator(exact: bool) -> None:
    """Make the process's resident memory track the memory that is alive (`exact`), or let
    the allocator keep freed memory for reuse.

    Exact is what a probe and a budget need: with glibc's defaults, large tensors come from
    a heap whose freed memory stays resident, by amounts that differ from run to run (a
    12-block ViT: 160 MiB alive at the peak, 620 MiB resident), which no probe can predict.
    With exact, repeated runs measure within 1 MiB of each other (docs/memory.md). Its price
    is that every large tensor is faulted into fresh pages, page by page, on every step: one
    epoch of that ViT spends 46 % of its CPU time in the kernel. A run without a budget reuses.
    (MKL's own buffer cache is switched off in edge_svp/__init__.py, before torch loads.)
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        for parameter, value in (EXACT_HOST_ALLOCATOR if exact else REUSING_HOST_ALLOCATOR).items():
            libc.mallopt(parameter, value)
    except (OSError, AttributeError):
        pass


# Throwaway names interned and let go by settle_interned_strings, a step at a time, until the
# table of interned strings is rebuilt (a table of 2^20 has fewer free slots than the most)
SETTLING_NAMES, SETTLING_STEP = 1 << 20, 5000
REBUILT_TABLE = 2**20  # what a new table allocates at least, with torch's names in it


def settle_interned_strings() -> None:
    """Rebuild Python's table of interned strings now, at the size training would grow it to.

    Interning a name that then dies (pybind11 interns keyword-argument names at every call:
    torch.utils.checkpoint makes one such call per checkpointed segment) uses up a slot of the
    table, which only a rebuild gives back; the rebuild sizes it for three times the strings
    alive, which in a torch process doubles it: 3.7 MiB more at once. A backprop run on
    cifar10-cnn at micro-batch 8 reached that after 83 steps and went over its budget. Names
    interned and let go until the table is rebuilt (seen as a new allocation of a MiB or more
    by tracemalloc; at most 0.3 s) bring that forward and leave it with every slot free: call
    it just before a baseline is taken, as a rebuild after one is charged to what follows.
    Where interned strings never die (Python 3.12 makes them immortal) no slot is used up,
    and the names would stay: nothing is done there."""
    probe = sys.intern("".join(["edge-svp-", "mortal"]))
    if sys.getrefcount(probe) > 2**20:  # an immortal object's count
        return
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        for start in range(0, SETTLING_NAMES, SETTLING_STEP):
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            for i in range(start, start + SETTLING_STEP):
                sys.intern(f"edge-svp-{i}")
            if tracemalloc.get_traced_memory()[1] - before > REBUILT_TABLE:
                return
    finally:
        if not tracing:
            tracemalloc.stop()


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Inside, a full garbage collection scans only the objects made since entry.

    Every MemoryMeter collects fully before its baseline, so that garbage a probe left in
    the old generations is not freed below it; a planner makes one meter per probed block,
    micro-batch and lever option. Scanning torch's own objects each time costs ~0.2 s a
    collection, so those alive at entry, once collected, are frozen (gc.freeze) until exit.
    """
    if gc.get_freeze_count():  # an enclosing frozen_heap froze them
        yield
        return
    # torch.optim's first optimizer imports torch._dynamo (torch._disable_dynamo): some 800
    # modules, 117,000 objects, which made every later collection ~60 ms, 0.8 s of a fit's
    # 13 meters. Imported before the freeze, they are frozen with the rest.
    import torch._dynamo  # noqa: F401

    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def release_memory(device: torch.device) -> None:
    """Give freed memory back: to the OS on CPU (glibc keeps freed heap otherwise), and the
    caching allocator's blocks on CUDA."""
    gc.collect(1)  # young generations only: a full collection takes ~0.25 s with torch loaded
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


# The caching allocator reserves memory in segments (2 MiB for small tensors, 20 MiB and up
# for large ones), so what it reserves runs ahead of what is allocated, which the budget
# counts. The cap leaves it this much room: a quarter of the budget, at least 64 MiB.
ALLOCATOR_SLACK = (0.25, 64 * 2**20)


def cap_device_memory(device: torch.device, budget: int) -> None:
    """Let the CUDA caching allocator reserve at most what it holds now, the budget and its
    segment slack: an allocation beyond that fails at once instead of thrashing. The budget
    itself (allocated bytes) is checked against the measured peak."""
    share, least = ALLOCATOR_SLACK
    limit = torch.cuda.memory_reserved(device) + budget + max(int(share * budget), least)
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(limit / total, 1.0), device)


def unified_memory(device: torch.device) -> bool:
    """Does this CUDA device share the host's RAM (an integrated GPU such as a Jetson's)?"""
    if device.type != "cuda":
        return False
    return bool(torch.cuda.get_device_properties(device).is_integrated)


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return peak_rss_bytes()


class MemoryMeter:
    """Peak memory above a baseline, per measured section (a block's training).

    meter = MemoryMeter(device)        # baseline: memory in use now
    with meter.section():              # peak memory in here, above the baseline
        ...
    meter.peaks                        # one entry per section, in bytes
    """

    def __init__(self, device: torch.device, interval: float = 0.005, settle: bool = False):
        """`settle`: first rebuild Python's table of interned strings, which training would
        otherwise grow after the baseline (settle_interned_strings); for a budget's meter."""
        self.device = device
        self.interval = interval
        if settle:
            settle_interned_strings()
        # every generation, once: garbage the planner's probes left in the old ones (copies
        # of blocks, optimizers) would otherwise be freed during training, below a baseline
        # that counted it
        gc.collect()
        release_memory(device)
        self.baseline = self.in_use()
        self.peaks: list[int] = []
        self._before_sections = 0  # the process's peak before the last section reset it

    def process_peak(self) -> int:
        """The process's peak memory so far (on CUDA the allocator's), sections or not:
        each section resets the peak it reads."""
        return max(self._before_sections, peak_memory_bytes(self.device))

    def in_use(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return current_rss_bytes()

    def section(self) -> _Section:
        return _Section(self)


class _Section:
    def __init__(self, meter: MemoryMeter):
        self.meter = meter
        self.sampled = 0
        self._stop = threading.Event()
        self._thread = None

    def _sample(self) -> None:
        while not self._stop.wait(self.meter.interval):
            self.sampled = max(self.sampled, current_rss_bytes())

    def __enter__(self) -> _Section:
        device = self.meter.device
        self.meter._before_sections = self.meter.process_peak()
        release_memory(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            self.hwm_reset = reset_peak_rss()
            self.sampled = current_rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        device = self.meter.device
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device)
        else:
            self._stop.set()
            self._thread.join()
            # without a resettable high-water mark, the samples are all we have
            peak = max(self.sampled, peak_rss_bytes()) if self.hwm_reset else self.sampled
        self.peak = max(peak - self.meter.baseline, 0)
        self.meter.peaks.append(self.peak)
