"""Topic ids: which log a topic name stands for now.

Kafka gives every topic a random id when it is created (KIP-516, brokers 2.8 and later): a
topic deleted and created again under the same name, or the same name on a fresh broker, is
a new log with a new id, whose offsets restart at 0. Offsets stored with the data, and the
versions of rows, belong to the log they were read from; the positioner compares ids to tell
a recreated topic from the one it stored offsets for.

aiokafka 0.14 asks for metadata up to version 5, which has no ids; this module sends version
12 of the metadata request itself (the request and response layouts of Kafka's
``MetadataRequest.json`` / ``MetadataResponse.json``, in aiokafka's protocol types). A broker
that does not take version 12 gives no ids (None): the caller then relies on offsets alone.
"""

from __future__ import annotations

import uuid
from io import BytesIO
from typing import Any, NamedTuple

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    AbstractType,
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)


class Uuid(AbstractType[bytes]):  # type: ignore[misc]  # aiokafka is untyped
    """Kafka's ``uuid`` type: 16 bytes."""

    @classmethod
    def encode(cls, value: bytes) -> bytes:
        if len(value) != 16:
            raise ValueError(f"a uuid is 16 bytes, not {len(value)}")
        return value

    @classmethod
    def decode(cls, data: BytesIO) -> bytes:
        value = data.read(16)
        if len(value) != 16:
            raise ValueError("buffer underrun decoding a uuid")
        return value


class MetadataResponse_v12(Response):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 12
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            CompactArray(
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("rack", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            CompactArray(
                ("error_code", Int16),
                ("name", CompactString("utf-8")),
                ("topic_id", Uuid),
                ("is_internal", Boolean),
                (
                    "partitions",
                    CompactArray(
                        ("error_code", Int16),
                        ("partition_index", Int32),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("replica_nodes", CompactArray(Int32)),
                        ("isr_nodes", CompactArray(Int32)),
                        ("offline_replicas", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("topic_authorized_operations", Int32),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class MetadataRequest_v12(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 12
    RESPONSE_TYPE = MetadataResponse_v12
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(
                ("topic_id", Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields)
            ),
        ),
        ("allow_auto_topic_creation", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


_NO_ID = bytes(16)


class TopicIdsRequest(Request[MetadataRequest_v12]):  # type: ignore[misc]
    """Metadata of named topics with their ids; never creates a topic."""

    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[MetadataRequest_v12]) -> MetadataRequest_v12:
        return request_struct_class([(_NO_ID, name, {}) for name in self._topics], False, False, {})


class TopicFacts(NamedTuple):
    """What the brokers say of one topic now."""

    topic_id: str | None
    """Kafka's id of its log (None: a broker without ids)."""
    partitions: int


def facts_of(response: Any) -> dict[str, TopicFacts]:
    """Return the id and partition count of each topic a metadata response knows (missing
    topics left out)."""
    found: dict[str, TopicFacts] = {}
    for error_code, name, topic_id, _, partitions, *_ in response.topics:
        if error_code == 0 and name is not None and topic_id != _NO_ID:
            found[name] = TopicFacts(str(uuid.UUID(bytes=topic_id)), len(partitions))
    return found


async def read_topic_facts(client: Any, topics: list[str]) -> dict[str, TopicFacts]:
    """Return the id and partition count of each of ``topics`` that exists, asking any broker
    of a started ``AIOKafkaClient`` (ids None when the broker gives none: it does not take
    version 12 of the metadata request)."""
    from aiokafka.errors import IncompatibleBrokerVersion

    if not topics:
        return {}
    node = client.get_random_node()
    try:
        response = await client.send(node, TopicIdsRequest(sorted(set(topics))))
    except (IncompatibleBrokerVersion, NotImplementedError):
        cluster = await client.fetch_all_metadata()
        return {
            topic: TopicFacts(None, len(partitions))
            for topic in topics
            if (partitions := cluster.partitions_for_topic(topic))
        }
    return facts_of(response)


async def read_topic_ids(client: Any, topics: list[str]) -> dict[str, str] | None:
    """Return the ids of ``topics`` that exist; None when the brokers give no ids."""
    facts = await read_topic_facts(client, topics)
    if any(f.topic_id is None for f in facts.values()):
        return None
    return {topic: f.topic_id for topic, f in facts.items() if f.topic_id is not None}


class TopicIds:
    """Reads topic ids and partition counts over one client of its own, started on first use
    and kept (the positioner and the topic watch of a worker)."""

    def __init__(self, bootstrap: list[str], options: dict[str, Any]) -> None:
        self._bootstrap = bootstrap
        self._options = options
        self._client: Any = None

    async def facts(self, topics: list[str]) -> dict[str, TopicFacts]:
        """Return the id and partition count of each of ``topics`` that exists."""
        from aiokafka.client import AIOKafkaClient

        if self._client is None:
            client = AIOKafkaClient(bootstrap_servers=self._bootstrap, **self._options)
            try:
                await client.bootstrap()
            except BaseException:
                await client.close()
                raise
            self._client = client
        try:
            return await read_topic_facts(self._client, topics)
        except BaseException:
            client, self._client = self._client, None
            await client.close()  # made again next time
            raise

    async def close(self) -> None:
        """Close the client."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()
