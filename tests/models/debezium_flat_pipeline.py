"""The tables of tests/debezium_source.py as Debezium's ``ExtractNewRecordState`` rows
(tests/integration/test_debezium_capture.py's ``-flat`` connector, whose topics are
``<prefix>-flat.public.<table>``: the worker's ``TOPIC_PREFIX`` is ``<prefix>-``, so these
topics do not clash with tests/models/debezium_pipeline.py's)."""

from __future__ import annotations

from models.base import Base, MirroredEntity
from tests.models.debezium_pipeline import CustomerColumns, OrderLineColumns


class FlatPipelineCustomer(CustomerColumns, MirroredEntity, Base):
    """The customers, deletes rewritten (``__deleted``), versioned as any topic is."""

    __tablename__ = "flat_pipeline_customer"
    __topic__ = "flat.public.pipeline_customer"
    __input_format__ = "debezium-flat"


class FlatPipelineOrderLine(OrderLineColumns, MirroredEntity, Base):
    """The order lines, by their composite key."""

    __tablename__ = "flat_pipeline_order_line"
    __topic__ = "flat.public.pipeline_order_line"
    __input_format__ = "debezium-flat"
