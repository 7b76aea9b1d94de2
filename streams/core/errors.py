"""One exception root for the project, with a `retriable` flag callers branch on.

Modelled on aiokafka's errors: a caller asks `err.retriable` instead of walking an
isinstance chain. Subclasses are one line each.
"""

from __future__ import annotations

from typing import Any


class MirrorError(Exception):
    """Root of every error this project raises on purpose."""

    retriable: bool = False


class SettingsError(MirrorError):
    """A configuration value is missing or malformed; the message names the variable."""


class DependencyError(MirrorError):
    """An installed package is not the version the project's workarounds were written for."""


class RegistryError(MirrorError):
    """An entity declaration is inconsistent (duplicate topic or kind, missing key column)."""


class StoreError(MirrorError):
    """The SQL store refused a batch for a reason that retrying will not fix."""


class UnfitTable(StoreError):
    """A table exists but cannot keep the mirror's guarantees on its database (an engine
    without transactions, a key collation that merges keys); the message says how to fix it."""


class StoreUnavailableError(StoreError):
    """The SQL store could not be reached; retry with backoff."""

    retriable = True


class StoreConflict(StoreUnavailableError):
    """Another transaction held what this one needed (a deadlock, a lock wait timed out): the
    database gave up this one; retry with backoff."""


class DeadLetterError(MirrorError):
    """Dead letters could not be written; the batch is not committed and will be retried."""

    retriable = True


class StoreRefusals(MirrorError):
    """The database refused some rows; the batch was rolled back so they can be dead-lettered."""

    def __init__(self, rejections: list[Any]) -> None:
        self.rejections = rejections
        super().__init__(f"the database refused {len(rejections)} rows")


class BatchHookError(MirrorError):
    """A model's ``on_batch`` raised: the batch rolls back and is retried, like a database error."""

    retriable = True


class ForwardError(MirrorError):
    """Records could not be forwarded to a repartition topic yet; the batch is sent again."""

    retriable = True


class ForwardRefused(MirrorError):
    """The broker refused a forwarded batch for a reason that retrying will not fix."""


class CacheError(MirrorError):
    """The cached table's changelog could not be written yet; the write is retried."""

    retriable = True


class OffsetGap(MirrorError):
    """A batch did not follow on from the offsets stored with the data; nothing was committed,
    and its partitions are read again from the stored offsets."""

    def __init__(self, gaps: list[Any]) -> None:
        self.gaps = gaps
        super().__init__("; ".join(str(gap) for gap in gaps))
