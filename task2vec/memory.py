"""The process's memory allocator, tuned for large tensors that come and go (a setting, not an import effect).

glibc's malloc serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
and gives it back on ``free``: each forward/backward at 224 px then touches new pages, and the
kernel's page-fault and zeroing work was half the CPU time of an embedding (1.2 million minor
faults per two Fisher steps of 16 images; benchmarks/README.md, issue 23). Raising the thresholds
lets malloc reuse freed memory instead. Written by hand: ``mallopt`` through ctypes is all it takes,
and no maintained package wraps it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Make glibc keep freed blocks up to ``threshold`` bytes for reuse; True when it took effect.

    A process-wide setting: the command line calls it once at start; a library user may too.
    Elsewhere than glibc Linux it does nothing and returns False.
    """
    if not sys.platform.startswith("linux") or threshold < 1:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * threshold))
