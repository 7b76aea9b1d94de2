"""The aiokafka workarounds refuse an aiokafka they were not written for, in one line.

What they work around is tested against the real broker (tests/integration/test_headers.py).
"""

from __future__ import annotations

import aiokafka
import aiokafka.consumer.fetcher as fetcher
import pytest

from streams.core.errors import DependencyError, MirrorError
from streams.kafka import aiokafka_fixes
from streams.kafka.aiokafka_fixes import TESTED_AIOKAFKA, check_aiokafka


def test_the_installed_aiokafka_is_the_one_the_fixes_were_written_for() -> None:
    assert aiokafka.__version__ in TESTED_AIOKAFKA
    check_aiokafka()


def test_another_aiokafka_is_one_line_naming_both_versions_and_the_fix() -> None:
    with pytest.raises(DependencyError) as info:
        check_aiokafka("0.15.0")
    message = str(info.value)
    assert isinstance(info.value, MirrorError)  # the worker and the commands print "error: ..."
    assert "\n" not in message
    assert "aiokafka 0.15.0 is installed" in message
    assert all(version in message for version in TESTED_AIOKAFKA)
    assert "requirements.lock" in message


def test_install_patches_nothing_under_another_aiokafka(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiokafka, "__version__", "0.13.0")
    monkeypatch.setattr(fetcher, "MemoryRecords", fetcher.MemoryRecords)  # restored after
    before = fetcher.MemoryRecords
    with pytest.raises(DependencyError, match=r"aiokafka 0\.13\.0 is installed"):
        aiokafka_fixes.install()
    assert fetcher.MemoryRecords is before
