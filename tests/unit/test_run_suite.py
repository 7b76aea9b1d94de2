"""The whole suite's two parts (tests/run_suite.py); a serial test refused beside others."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import pytest_collection_modifyitems
from tests.run_suite import parts, passed


def test_the_parallel_part_runs_first_and_the_serial_part_alone() -> None:
    parallel, serial = parts(["-p", "no:cacheprovider"], 2)
    assert parallel[3:] == [
        "-n",
        "2",
        "--dist",
        "loadscope",
        "-m",
        "not serial",
        "-p",
        "no:cacheprovider",
    ]
    assert serial[3:] == ["-m", "serial", "-p", "no:cacheprovider"]


def test_a_mark_expression_of_the_caller_is_combined_with_each_parts_own() -> None:
    parallel, serial = parts(["-m", "integration", "-x"], 2)
    assert parallel[3:] == [
        "-n",
        "2",
        "--dist",
        "loadscope",
        "-m",
        "(integration) and not serial",
        "-x",
    ]
    assert serial[3:] == ["-m", "(integration) and serial", "-x"]
    parallel, serial = parts(["-m=not slow"], 2)
    assert parallel[-1] == "(not slow) and not serial" and serial[-1] == "(not slow) and serial"


def test_a_part_that_selects_nothing_passes_and_a_failure_does_not() -> None:
    assert passed(0) and passed(5)
    assert not passed(1) and not passed(2) and not passed(4)


class _Item:
    def __init__(self, nodeid: str, serial: bool) -> None:
        self.nodeid = nodeid
        self.serial = serial

    def get_closest_marker(self, name: str) -> object:
        return object() if name == "serial" and self.serial else None


def test_a_serial_test_is_refused_in_a_process_beside_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items: Any = [_Item("t.py::a", serial=False), _Item("t.py::outage", serial=True)]
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # this test may run under -n
    pytest_collection_modifyitems(items)  # one process: anything goes
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    pytest_collection_modifyitems(items[:1])
    with pytest.raises(pytest.UsageError, match=r"cannot run beside others \(-n\): t.py::outage"):
        pytest_collection_modifyitems(items)
