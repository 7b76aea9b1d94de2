"""The shipped example entity: planets mirrored from ``planet-changed``."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, MirroredEntity


class Planet(MirroredEntity, Base):
    """A planet owned by service A; ``uuid`` and ``name`` are kept, other fields ignored."""

    __tablename__ = "servicea_planet"
    __topic__ = "planet-changed"
    __event_fields__ = {"uuid": "planetUuid", "name": "planetName"}

    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
