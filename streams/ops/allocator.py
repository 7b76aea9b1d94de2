"""Keep glibc's allocator from handing the fetch buffers' memory back and forth to the kernel.

A Kafka fetch arrives as one response of up to a megabyte per partition, read through asyncio's
stream buffer into a few more buffers of its size (aiokafka's ``AIOKafkaConnection._read``,
``StreamReader.readexactly``, the response's ``Bytes`` field), each freed a moment later. glibc
serves a block this large with its own ``mmap`` (above ``M_MMAP_THRESHOLD``, 128 KiB at start),
or takes it from a heap it shrinks again once the free top exceeds ``M_TRIM_THRESHOLD``; either
way the next buffer's pages are new, and the kernel zeroes each on its first touch. On
Debezium's 4 KB records that was 1.7 page faults and about 5 us of CPU per record in a bare
aiokafka consumer (13 against 8 us a record with the settings below; BENCHMARKS.md, "Issue 25").

:func:`tune` sets both thresholds once, at the worker's start: blocks up to 32 MiB (glibc's
largest ``M_MMAP_THRESHOLD``) come from the heaps, and a heap keeps up to 256 MiB of free top
for the next fetch. The cost is memory the process keeps after a peak instead of returning it.
Nothing is changed when the process is not on glibc, or when its environment already tunes
the allocator (``GLIBC_TUNABLES``, ``MALLOC_*_``): the operator's settings win. ``mallopt`` is
called through ctypes because no maintained package wraps it, and it is one call.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from collections.abc import Mapping

log = logging.getLogger(__name__)

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heaps (glibc refuses more: HEAP_MAX_SIZE / 2).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory a heap keeps at its top before giving it back.
TRIM_THRESHOLD = 256 * 1024 * 1024
#: Environment variables by which an operator tunes glibc's allocator.
OPERATOR_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def tune(environ: Mapping[str, str] = os.environ) -> bool:
    """Set glibc's thresholds for the fetch buffers; tell whether they were set."""
    if platform.libc_ver()[0] != "glibc" or any(name in environ for name in OPERATOR_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done: bool = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    done = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and done
    if not done:
        log.warning("glibc refused the allocator's thresholds (mallopt); running without them")
    return done
