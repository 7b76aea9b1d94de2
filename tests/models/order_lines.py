"""An order line keyed by its order and its line number: a composite key (``tests/unit/
test_composite_keys.py``, ``tests/integration/test_composite_store.py`` and
``test_composite_worker.py``)."""

from __future__ import annotations

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, MirroredEntity


class OrderLine(MirroredEntity, Base):
    """One line of an order: ``(order_id, line_no)`` is its key."""

    __tablename__ = "order_line"
    __topic__ = "order-line-changed"
    __kind__ = "order_line"
    __event_fields__ = {
        "order_id": "orderId",
        "line_no": "lineNo",
        "sku": "sku",
        "quantity": "quantity",
    }

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
