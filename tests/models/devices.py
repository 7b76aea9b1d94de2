"""A device keyed by a UUID and naming its owner by another: UUID columns (``tests/unit/
test_uuid_keys.py``, ``tests/integration/test_uuid_columns.py``)."""

from __future__ import annotations

import uuid

from sqlalchemy import String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, MirroredEntity


class Device(MirroredEntity, Base):
    """A key column of text keys (``Uuid(as_uuid=False)``), a column of ``uuid.UUID`` objects."""

    __tablename__ = "test_device"
    __topic__ = "device-changed"
    __event_fields__ = {"id": "deviceId", "owner": "ownerId", "name": "name"}
    __key_field__ = "deviceId"

    id: Mapped[str] = mapped_column(Uuid(as_uuid=False), primary_key=True)
    owner: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
