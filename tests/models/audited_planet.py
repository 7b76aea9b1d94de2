"""A planet whose ``on_batch`` hook keeps an audit table in step with the mirror.

The test creates ``planet_audit`` and ``audit_switch`` first. While ``audit_switch`` holds a
row the hook raises (after noting the attempt in ``AUDIT_ATTEMPTS_FILE``, outside the
transaction, so the test can wait for retries), as a failing audit write would.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import String, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, MirroredEntity


class AuditedPlanet(MirroredEntity, Base):
    """``uuid`` and ``name`` kept; each batch's writes and deletes appended to an audit."""

    __tablename__ = "audited_planet"
    __topic__ = "planet-changed"
    __event_fields__ = {"uuid": "planetUuid", "name": "planetName"}

    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)

    @classmethod
    def on_batch(
        cls, conn: Any, applied: Mapping[str, Mapping[str, Any]], deleted: list[str]
    ) -> None:
        attempts = os.environ.get("AUDIT_ATTEMPTS_FILE")
        if attempts:
            with Path(attempts).open("a") as out:
                out.write(f"{len(applied)} {len(deleted)}\n")
        if conn.execute(text("SELECT count(*) FROM audit_switch")).scalar_one():
            raise RuntimeError("the audit is switched off")
        rows = [{"uuid": k, "name": row["name"], "deleted": 0} for k, row in applied.items()]
        rows += [{"uuid": k, "name": None, "deleted": 1} for k in deleted]
        conn.execute(
            text("INSERT INTO planet_audit (uuid, name, deleted) VALUES (:uuid, :name, :deleted)"),
            rows,
        )
