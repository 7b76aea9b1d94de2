"""glibc's allocator keeps the fetch buffers' memory for the next fetch (streams/ops/allocator.py).

What it works around: each fetch's megabyte buffers freed and allocated again came back as new
pages, each zeroed by the kernel on its first touch (page faults, counted here in a child
process that reads "fetches" as aiokafka does: socket reads appended to a buffer, the response
copied out of it and cut into parts).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from streams.ops import allocator

ROOT = Path(__file__).resolve().parents[2]

FETCHES = textwrap.dedent(
    """
    import resource, sys, threading
    from streams.ops.allocator import tune
    if sys.argv[1] == "tuned":
        assert tune()

    def fetches() -> None:  # in a thread, as Faust's consumer thread reads
        chunk = b"x" * (256 * 1024)
        for _ in range(100):
            buffer = bytearray()
            for _ in range(16):  # a 4 MiB response arriving in socket reads
                buffer.extend(chunk)
            response = bytes(memoryview(buffer))
            del buffer[:]
            parts = [response[i : i + 2**20] for i in range(0, len(response), 2**20)]
            del response, parts

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    thread = threading.Thread(target=fetches)
    thread.start()
    thread.join()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _page_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", FETCHES, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    return int(done.stdout)


def test_tuned_fetch_buffers_fault_in_fewer_new_pages() -> None:
    untuned, tuned = _page_faults("default"), _page_faults("tuned")
    assert tuned < 0.75 * untuned, (untuned, tuned)


def test_the_operators_own_allocator_settings_are_left_alone() -> None:
    for name in allocator.OPERATOR_SETTINGS:
        assert allocator.tune({name: "1"}) is False
