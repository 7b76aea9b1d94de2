"""The metadata request that reads topic ids (version 12, which aiokafka 0.14 does not send)."""

from __future__ import annotations

import uuid
from io import BytesIO

from streams.kafka.topic_ids import (
    MetadataRequest_v12,
    MetadataResponse_v12,
    TopicFacts,
    TopicIdsRequest,
    facts_of,
)


def test_the_request_names_topics_by_name_and_never_creates_them() -> None:
    struct = TopicIdsRequest(["b", "a"]).build(MetadataRequest_v12)
    data = BytesIO(struct.encode())
    decoded = MetadataRequest_v12.SCHEMA.decode(data)
    topics, allow_create, _, _ = decoded
    assert [name for _, name, _ in topics] == ["b", "a"]
    assert all(topic_id == bytes(16) for topic_id, _, _ in topics)
    assert allow_create is False


def partition(index: int) -> tuple[object, ...]:
    return (0, index, 1, 0, [1], [1], [], {})


def test_ids_are_read_from_the_response_and_missing_topics_left_out() -> None:
    known = uuid.uuid4()
    response = MetadataResponse_v12(
        0,
        [],
        "cluster",
        1,
        [
            (0, "planet-changed", known.bytes, False, [partition(0), partition(1)], -(2**31), {}),
            (3, "missing", bytes(16), False, [], -2147483648, {}),
        ],
        {},
    )
    decoded = MetadataResponse_v12.decode(BytesIO(response.encode()))
    assert facts_of(decoded) == {"planet-changed": TopicFacts(str(known), 2)}
