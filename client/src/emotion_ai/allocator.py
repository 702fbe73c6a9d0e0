"""Keep the per-image buffers of a prediction in the process instead of handing them back to the kernel.

A prediction allocates and frees the same large buffers for every image: the decoded image (0.9 MB at
640x480) and the detector's blobs (several MB). glibc's malloc, with its default dynamic thresholds,
serves such blocks with `mmap` or returns the top of the heap to the kernel when they are freed, so the
next image touches the same amount of fresh memory again: about 3,700 page faults per 640x480 photo,
3-6 ms of a 35-45 ms prediction on the reference CPU (AMD EPYC, 2 cores). Two `mallopt` settings stop
that: blocks under `MMAP_THRESHOLD_BYTES` come from the heap, and the heap keeps up to
`TRIM_THRESHOLD_BYTES` of freed memory. The memory a process holds is then its peak use (bounded by
those thresholds), not less.

The settings are process-wide and only exist in glibc (Linux); elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import platform

log = logging.getLogger(__name__)

#: glibc's `mallopt` parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Freed memory at the top of the heap kept for reuse.
TRIM_THRESHOLD_BYTES = 128 << 20
#: Blocks below this size come from the heap (glibc's own ceiling for its dynamic threshold).
MMAP_THRESHOLD_BYTES = 32 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed image-sized blocks for reuse (once per process; a second call, even a
    concurrent one, only sets the same values again).

    Returns:
        True when the settings are in effect (glibc), False where they do not apply.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD,
                                                                                  TRIM_THRESHOLD_BYTES) == 1
    log.debug("malloc keeps freed blocks under %d MB: %s", MMAP_THRESHOLD_BYTES >> 20, applied)
    return applied
