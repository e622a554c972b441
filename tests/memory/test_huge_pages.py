import os
import subprocess
import sys

import pytest

from edge_svp.memory.huge_pages import TUNABLE, huge_pages_wanted

# Starts, is restarted with the tunable, then maps 64 MiB as a budgeted run maps a tensor
# (an mmap of its own, every page touched) and counts the page faults that took.
PROGRAM = """
import ctypes, os, resource
print("start", flush=True)
from edge_svp.memory.huge_pages import restart_with_huge_pages
restart_with_huge_pages()
ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD, as in a budgeted run
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
buffer = ctypes.create_string_buffer(64 * 2**20)
print(os.environ.get("GLIBC_TUNABLES"), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def run(environ: dict) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | environ
    result = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True,
                            text=True, check=True)  # fmt: skip
    return result.stdout.split()


def test_a_tunable_already_set_is_left_alone():
    assert not huge_pages_wanted({"GLIBC_TUNABLES": f"{TUNABLE}=0"})
    assert not huge_pages_wanted({"GLIBC_TUNABLES": f"glibc.malloc.arena_max=1:{TUNABLE}=1"})


@pytest.mark.skipif(not huge_pages_wanted({}), reason="needs glibc >= 2.35 and huge pages")
def test_the_command_restarts_once_with_huge_pages_and_maps_tensors_in_them():
    start, again, tunables, faults = run({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert start == again == "start"  # the program ran twice: once more after execv
    assert tunables == f"glibc.malloc.arena_max=2:{TUNABLE}=1"  # added to what was there
    _, off, faults_off = run({"GLIBC_TUNABLES": f"{TUNABLE}=0"})  # not restarted: one start
    assert off == f"{TUNABLE}=0" and int(faults_off) > 16_000  # 4 KiB pages
    assert int(faults) < int(faults_off) / 4  # 2 MiB pages (a few small ones at the ends)
