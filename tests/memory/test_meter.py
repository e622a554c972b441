import gc
import os
import subprocess
import sys
import tracemalloc
import weakref

import pytest
import torch

from edge_svp.memory.meter import MemoryMeter, frozen_heap, settle_interned_strings


def test_cpu_meter_sees_an_allocation_and_not_the_baseline():
    meter = MemoryMeter(torch.device("cpu"))
    with meter.section() as big:
        x = torch.ones(50_000_000 // 4)  # 50 MB, touched
        del x
    with meter.section() as small:
        y = torch.ones(1000)
        del y
    assert 45e6 < big.peak < 80e6
    assert small.peak < 10e6
    assert meter.peaks == [big.peak, small.peak]


# In a process of its own: the allocator's settings last for the whole process.
FREE_AND_READ_RSS = """
import sys, torch
from edge_svp.memory.meter import current_rss_bytes, set_host_allocator
set_host_allocator(exact=sys.argv[1] == "exact")
x = torch.ones(4 * 2**20)  # 16 MiB, touched: below the reusing allocator's mmap threshold
before = current_rss_bytes()
del x
print(before - current_rss_bytes())
"""


@pytest.mark.parametrize("exact", [True, False])
def test_the_exact_host_allocator_returns_freed_tensors_and_the_reusing_one_keeps_them(exact):
    if not sys.platform.startswith("linux"):
        pytest.skip("the host allocator is glibc's")
    mode = "exact" if exact else "reuse"
    result = subprocess.run([sys.executable, "-c", FREE_AND_READ_RSS, mode], capture_output=True,
                            text=True, check=True)  # fmt: skip
    returned = int(result.stdout)
    if exact:
        assert returned > 15 * 2**20
    else:
        assert returned < 2**20


# Convolutions at 40 new batch sizes, in a process of its own that imports edge_svp first:
# oneDNN's kernels must not be kept per shape (edge_svp/__init__.py)
CONVOLVE_NEW_SHAPES = """
import edge_svp, torch
from edge_svp.memory.meter import current_rss_bytes, set_host_allocator
set_host_allocator(exact=True)
torch.manual_seed(0)
conv = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 3, padding=1))
def step(n):
    conv(torch.randn(n, 3, 16, 16)).sum().backward()
step(1), step(2)
before = current_rss_bytes()
for n in range(3, 43):
    step(n)
print(current_rss_bytes() - before)
"""


@pytest.mark.parametrize("kept", [False, True])
def test_convolution_kernels_are_not_kept_for_every_shape(kept):
    if not sys.platform.startswith("linux"):
        pytest.skip("resident memory is read from /proc")
    env = {k: v for k, v in os.environ.items()
           if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")}  # fmt: skip
    if kept:  # the libraries' defaults: 40 shapes kept 9 MiB when this was written
        env |= {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024", "LRU_CACHE_CAPACITY": "1024"}
    result = subprocess.run([sys.executable, "-c", CONVOLVE_NEW_SHAPES], capture_output=True,
                            text=True, check=True, env=env)  # fmt: skip
    grown = int(result.stdout)
    assert (grown > 4 * 2**20) if kept else (grown < 2**20)


def test_a_frozen_heap_collects_new_garbage_and_unfreezes_once_outside_the_outermost():
    class Cycle:
        def __init__(self):
            self.me = self

    gc.disable()  # only the collections under test
    try:
        alive = weakref.ref(Cycle())  # garbage before: collected on entry
        with frozen_heap():
            assert alive() is None and gc.get_freeze_count() > 0
            inside = weakref.ref(Cycle())  # made inside: a collection still finds it
            with frozen_heap():
                pass
            assert gc.get_freeze_count() > 0  # the inner one left the outer's freeze alone
            assert inside() is not None
            gc.collect()
            assert inside() is None
        assert gc.get_freeze_count() == 0
    finally:
        gc.enable()


FIRST_OPTIMIZER = """
import gc, torch
from edge_svp.memory.meter import frozen_heap
with frozen_heap():
    before = len(gc.get_objects())  # what a collection scans
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    print(len(gc.get_objects()) - before)
"""


def test_what_the_first_optimizer_imports_is_frozen_with_the_heap():
    # in a fresh process: torch._dynamo, which torch.optim imports on first use, is not yet
    # imported there
    made = subprocess.run([sys.executable, "-c", FIRST_OPTIMIZER], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    assert int(made) < 5_000  # 117,000 objects when it was imported inside


def test_settling_the_interned_strings_rebuilds_their_table_now_and_not_later():
    """Names interned and let go (as pybind11 interns keyword arguments at every call) use up
    the table's slots until a rebuild allocates a new one, after a baseline if nothing
    brought it forward."""
    tracemalloc.start()
    try:
        settle_interned_strings()
        table, settling = tracemalloc.get_traced_memory()  # the new table is traced
        tracemalloc.reset_peak()
        for i in range(50_000):
            sys.intern(f"a keyword at call {i}")
        later = tracemalloc.get_traced_memory()[1] - table
    finally:
        tracemalloc.stop()
    assert settling > 2**20  # a new table, at least a MiB in a process with torch loaded
    assert later < 2**20  # no other
