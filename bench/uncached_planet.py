"""The planet entity with no cached table, for the recovery bench's "cache off" baseline."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, MirroredEntity


class UncachedPlanet(MirroredEntity, Base):
    """``models.planet.Planet`` with ``__cached__ = False`` (its own table)."""

    __tablename__ = "bench_uncached_planet"
    __topic__ = "planet-changed"
    __cached__ = False
    __event_fields__ = {"uuid": "planetUuid", "name": "planetName"}

    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
