"""Moons declared with soft deletes, partial updates, and both (tests/integration/test_declared.py).

Each carries its own version (``moonVersion``), so a test can send events of one key out of
order and see the guard skip the older ones.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, MirroredEntity

FIELDS = {"uuid": "moonUuid", "name": "moonName", "size": "moonSize", "color": "moonColor"}


class MoonColumns:
    """The columns every moon has (SQLAlchemy copies a mixin's columns to each model)."""

    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    color: Mapped[str | None] = mapped_column(String(32), nullable=True)


class DeletedAt:
    """The column a soft delete sets."""

    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SoftMoon(MoonColumns, DeletedAt, MirroredEntity, Base):
    """A delete marks the row (``deleted_at``); the row stays."""

    __tablename__ = "declared_soft_moon"
    __topic__ = "softmoon-changed"
    __event_fields__ = FIELDS
    __version_field__ = "moonVersion"
    __soft_delete__ = "deleted_at"


class PatchedMoon(MoonColumns, MirroredEntity, Base):
    """An update changes only the fields it carries; deletes remove the row."""

    __tablename__ = "declared_patched_moon"
    __topic__ = "patchedmoon-changed"
    __event_fields__ = FIELDS
    __version_field__ = "moonVersion"
    __partial_updates__ = True


class SoftPatchedMoon(MoonColumns, DeletedAt, MirroredEntity, Base):
    """Both: a patch of a soft-deleted moon undeletes it and keeps the fields it lacks."""

    __tablename__ = "declared_soft_patched_moon"
    __topic__ = "softpatchedmoon-changed"
    __event_fields__ = FIELDS
    __version_field__ = "moonVersion"
    __soft_delete__ = "deleted_at"
    __partial_updates__ = True
