"""Transparent huge pages for the host allocator's mappings (Linux, glibc 2.35 or later).

Under a budget every tensor of 64 KiB or more is mapped on its own and unmapped when freed
(meter.set_host_allocator), so that resident memory tracks live memory; each step then
faults its tensors in again, 4 KiB at a time. glibc's tunable glibc.malloc.hugetlb=1 has it
ask the kernel for transparent huge pages (2 MiB) on those mappings, so a large tensor
faults in a few pages instead of hundreds, and is still returned whole when freed.

glibc reads its tunables once, when the process starts: the `edge-svp` command sets this one
and starts itself again before doing anything else. From Python, start the interpreter with
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 for the same effect. A GLIBC_TUNABLES that already
names the tunable (=0 turns it off) is left as it is. No torch here: this runs first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb"
TRANSPARENT_HUGE_PAGES = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library this process runs on, if it is glibc."""
    try:
        major, minor = os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")[:2]  # glibc 2.36
        return int(major), int(minor)
    except (AttributeError, ValueError, OSError, IndexError):
        return None


def huge_pages_wanted(environ=os.environ) -> bool:
    """Would the tunable take effect here, and has nobody set it yet?"""
    if TUNABLE in environ.get("GLIBC_TUNABLES", "") or not sys.executable:
        return False
    version = glibc_version()
    if version is None or version < (2, 35):
        return False
    try:  # "always [madvise] never": glibc's madvise works unless it is "never"
        return "[never]" not in TRANSPARENT_HUGE_PAGES.read_text()
    except OSError:
        return False


def restart_with_huge_pages() -> None:
    """Start this command again, with the same arguments and process id, with the tunable
    set (os.execv), where it would take effect; else return."""
    if not huge_pages_wanted():
        return
    tunables = os.environ.get("GLIBC_TUNABLES")
    os.environ["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}=1" if tunables else f"{TUNABLE}=1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
