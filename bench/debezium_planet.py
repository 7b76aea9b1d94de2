"""The planet fed by Debezium change events, for the bench's Debezium input (``--inputs``).

The same two columns as ``models.planet.Planet``, read from the topic of
``bench/debezium_input.py`` (its records name the columns as the source table does, so the
model declares no field map).
"""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, MirroredEntity

#: ``bench.debezium_input.ENCODING`` + ``.planet-changed`` (``bench.paths.topic_of``), not
#: imported: the worker imports this module alone.
TOPIC = "debezium-events.planet-changed"


class DebeziumPlanet(MirroredEntity, Base):
    """Planets as Debezium's PostgreSQL connector writes them (JsonConverter, schemas on)."""

    __tablename__ = "bench_debezium_planet"
    __topic__ = TOPIC
    __input_format__ = "debezium"

    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
