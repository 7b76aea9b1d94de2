"""A ticket keyed by an integer (``tests/unit/test_single_keys.py``,
``tests/integration/test_single_keys_store.py``): producers write its key as a number or as
text, and a tombstone's record key is always text."""

from __future__ import annotations

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, MirroredEntity


class Ticket(MirroredEntity, Base):
    """One integer key column, its field named for deletes by key field."""

    __tablename__ = "test_ticket"
    __topic__ = "ticket-changed"
    __event_fields__ = {"id": "ticketId", "title": "title"}
    __key_field__ = "ticketId"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str | None] = mapped_column(String(40), nullable=True)
