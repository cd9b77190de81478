"""How the process's C heap (glibc's malloc) serves PyTorch's CPU tensors: two policies.

PyTorch has no caching allocator on the CPU: every tensor is a ``malloc`` and every free a
``free``. glibc serves a block from a size threshold up (128 KiB at first, raised each time
such a block is freed, up to 32 MiB) with its own ``mmap``, returned to the system when freed,
and gives the top of its heap back to the system (``M_TRIM_THRESHOLD``). Memory handed back
costs a page fault per 4 KiB page the next time it is written: a fresh 10 MB gradient is
about 2 500 faults, a few milliseconds on a virtual machine, every step. Which policy is
right depends on the run:

* :func:`fixed_mmap_threshold` (``zoo embed``, ``zoo predict`` over a folder of large scenes):
  a long run whose small, long-lived output rows would pin heap blocks freed by the batches:
  every large block in its own mapping, returned on free, keeps memory set by the batch.
* :func:`keep_freed_memory` (training and benchmarking on the CPU): the same shapes every step,
  so the blocks freed by one step fit the next one's: keeping them (no mapping of their own,
  no trimming) spares the page faults, at the price of a resident set that does not shrink.
  PyTorch's CPU tuning guide reaches the same end with jemalloc or tcmalloc (``LD_PRELOAD``).

Written here because no library sets glibc's options from Python (the ``MALLOC_*_``
environment variables would have to be set before Python starts). Both are no-ops without
glibc (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

__all__ = ["KEEP_FREED_LIMIT", "fixed_mmap_threshold", "keep_freed_memory"]

log = logging.getLogger(__name__)

#: glibc's ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: :func:`keep_freed_memory`'s default: blocks up to 1 GiB come from the heap, and up to 1 GiB
#: of free heap top is kept (``mallopt`` takes a C ``int``: at most 2 GiB - 1).
KEEP_FREED_LIMIT = 1 << 30


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return getattr(libc, "mallopt", None)


def fixed_mmap_threshold(threshold: int = 128 * 1024) -> bool:
    """Keep glibc's malloc from growing the heap chip after chip (Linux; a no-op elsewhere).

    glibc raises its mmap threshold each time a large block is freed, so later batch-sized
    buffers (chips, activations) come from the heap, where the small long-lived objects of a
    long run (its output rows) pin them: without this, ``zoo embed`` over 16 384 chips of an
    8192 px scene grew past 4.8 GB. A fixed threshold (``mallopt(M_MMAP_THRESHOLD)``) keeps
    every block from ``threshold`` bytes up in its own mapping, returned on free.

    Args:
        threshold: blocks from this size up are mapped on their own.

    Returns:
        Whether the threshold was set (False without glibc).
    """
    mallopt = _mallopt()
    if mallopt is None:
        log.debug("no glibc mallopt: the heap keeps the platform's default behaviour")
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


def keep_freed_memory(limit: int = KEEP_FREED_LIMIT) -> bool:
    """Let glibc keep the blocks a training step frees for the next step (Linux; else a no-op).

    Sets ``M_MMAP_THRESHOLD`` (blocks below ``limit`` come from the heap, not a mapping of
    their own) and ``M_TRIM_THRESHOLD`` (up to ``limit`` of free heap top is not returned to
    the system): a step's fresh activations and gradients then reuse the pages the previous
    step wrote instead of faulting new ones in. The resident set stays at its peak (as with
    PyTorch's CUDA caching allocator on a GPU). Measured on GeoPix's CPU training step, whose
    class-wise memory has a 10 MB gradient per scale: docs/performance.md.

    Args:
        limit: the largest block served from the heap, and the free heap top kept, in bytes
            (at most ``2**31 - 1``).

    Returns:
        Whether glibc took both settings (False without glibc).

    Raises:
        ValueError: ``limit`` is not in ``[1, 2**31 - 1]``.
    """
    if not 1 <= limit < 2**31:
        raise ValueError(f"limit must be in [1, 2**31 - 1] bytes (a C int), got {limit}")
    mallopt = _mallopt()
    if mallopt is None:
        log.debug("no glibc mallopt: freed memory follows the platform's default behaviour")
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))
