"""Process-wide setting that makes eager CPU tensor code fast: keep freed memory for reuse.

torch allocates every intermediate tensor with ``malloc``. With glibc's defaults, blocks above
``M_MMAP_THRESHOLD`` come from fresh ``mmap`` pages and freed heap tops above ``M_TRIM_THRESHOLD``
go back to the kernel, so code that allocates and frees megabyte temporaries on every operation
(the simulator's per-subhalo deflections and pixel noise, batched transforms on 150x150 images)
pays a page fault per 4 KiB page each time: on this project's 2-core machine, half of the time of a
truncated-NFW deflection was kernel time (``docs/benchmarks.md``). Raising both thresholds keeps
freed memory in the process. Peak memory is unchanged; memory is returned to the system only when
the process ends.

The ``deeplense`` command line and the simulator's worker processes call
:func:`keep_freed_memory` at start; library users may call it once themselves. Set the
environment variable ``DEEPLENSE_MALLOC_TUNING=0`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 << 20  # the largest value glibc accepts on 64-bit systems
_TRIM_THRESHOLD_BYTES = 256 << 20


def keep_freed_memory() -> bool:
    """Raise glibc's mmap threshold to 32 MiB and its trim threshold to 256 MiB.

    Returns True when the allocator was changed; False on other C libraries or systems, or when
    ``DEEPLENSE_MALLOC_TUNING=0``.
    """
    if os.environ.get("DEEPLENSE_MALLOC_TUNING", "1") == "0" or platform.system() != "Linux":
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
    trim_ok = libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    return bool(mmap_ok and trim_ok)
