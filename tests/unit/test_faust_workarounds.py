"""The workarounds of faust-streaming in the ``faust_*`` modules: each test shows the bug, or
the Faust behaviour the workaround answers, in the installed faust-streaming and aiokafka, and
the workaround."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError
from faust.app.router import Router
from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.web.exceptions import NotFound

from streams.faust_app import FAUST_OPTIONS, MirrorRouter
from streams.intake.faust_consumer import FETCH_MAX_WAIT_MS, _seek_to_committed
from tables.faust_store import OFFSET_KEY, LocalTable, persisted_offset, table_files


class AssignedConsumer:
    """Stands in for aiokafka's consumer: raises, as it does, for partitions not assigned."""

    def __init__(self, assigned: set[TopicPartition]) -> None:
        self._assigned = assigned

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    async def seek_to_committed(self, *tps: TopicPartition) -> dict[TopicPartition, int]:
        if set(tps) - self._assigned:
            raise IllegalStateError(f"Partitions {set(tps) - self._assigned} are not assigned")
        return {tp: 7 for tp in tps}


def test_aiokafka_refuses_to_seek_a_partition_it_does_not_have() -> None:
    # Workaround 3: the error that crashed Faust's fetcher (faust-streaming/faust#54).
    async def seek() -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
        try:
            consumer.assign([TopicPartition("changelog", 0)])
            await consumer.seek_to_committed(TopicPartition("changelog", 1))
        finally:
            await consumer.stop()

    with pytest.raises(IllegalStateError):
        asyncio.run(seek())


def test_partitions_revoked_meanwhile_are_not_sought() -> None:
    # Faust's view of the assignment can lag behind aiokafka's during a rebalance.
    kept, gone = TopicPartition("changelog", 0), TopicPartition("changelog", 1)
    consumer = AssignedConsumer({kept})
    assert asyncio.run(_seek_to_committed(consumer, [kept, gone])) == {kept: 7}
    assert asyncio.run(_seek_to_committed(consumer, [gone])) == {}


def test_faust_resumes_partitions_before_it_seeks_them() -> None:
    # Workaround 2 (faust-streaming/faust#216): records can be fetched from the stale position
    # between the two calls. When this fails, Faust changed the order: see whether
    # MirrorConsumer.perform_seek is still needed.
    source = inspect.getsource(Recovery._resume_streams)
    assert source.index("resume_partitions(") < source.index("perform_seek()")


def test_faust_fetches_wait_longer_than_the_mirror_asks() -> None:
    # Workaround 4: Faust's fetch wait, which every offset query queued behind it waited for.
    source = inspect.getsource(AIOKafkaConsumerThread._create_worker_consumer)
    assert "fetch_max_wait_ms=1500" in source
    assert FETCH_MAX_WAIT_MS == 100


def test_a_faust_table_cannot_be_written_outside_a_stream_event() -> None:
    # Workaround 7 (faust-streaming/faust#300, #497): the cache writes a batch at a time,
    # outside any event, so it writes the store as Faust's recovery does.
    app = faust.App("bridge-test", broker="kafka://127.0.0.1:1", store="memory://")
    table = app.Table("planets", default=None, partitions=2)
    with pytest.raises(TypeError, match="outside of stream iteration"):
        table["k"] = b"v"
    local = LocalTable(table)
    local.write([(b"k", b"v", 1, 10), (b"gone", b"x", 0, 11), (b"gone", None, 0, 12)])
    assert local.size() == 1
    store: Any = table.data  # faust/stores/memory.py: a dict under .data
    assert store.data == {b"k": b"v"}


#: What the issue's operator had set beside the worker's own variables.
FAUST_ENVIRONMENT = {
    "BROKER_URL": "kafka://other-cluster:9092",
    "WEB_BIND": "0.0.0.0",
    "APP_DATADIR": "/elsewhere",
    "NODE_CANONICAL_URL": "http://elsewhere:1",
}


def test_faust_settings_take_their_environment_over_the_app_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Workaround 10: Faust reads os.environ for its settings, over what the app is given.
    for name, value in FAUST_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    given = {
        "broker": "kafka://127.0.0.1:9092",
        "web_bind": "127.0.0.1",
        "datadir": "/data",
        "canonical_url": "http://127.0.0.1:6066",
    }

    def chosen(app: faust.App) -> dict[str, str]:
        conf = app.conf
        return {
            "broker": str(conf.broker[0]),
            "web_bind": str(conf.web_bind),
            "datadir": str(conf.datadir),
            "canonical_url": str(conf.canonical_url),
        }

    faust_alone = chosen(faust.App("env-test", **given))
    assert faust_alone == {
        "broker": "kafka://other-cluster:9092",
        "web_bind": "0.0.0.0",
        "datadir": "/elsewhere",
        "canonical_url": "http://elsewhere:1",
    }
    assert chosen(faust.App("env-test", **given, **FAUST_OPTIONS)) == given


def test_faust_router_pages_fail_on_an_unknown_table_and_the_mirror_s_answer_404() -> None:
    # Workaround 11: the KeyError that /router/<name>/ let through as a 500 traceback.
    app = faust.App("router-test", broker="kafka://127.0.0.1:1", store="memory://")
    app.Table("planet", partitions=2)
    with pytest.raises(KeyError):
        Router(app).table_metadata("no-such-table")
    with pytest.raises(NotFound) as info:
        MirrorRouter(app).table_metadata("no-such-table")
    assert (info.value.code, info.value.detail) == (404, "unknown table")
    with pytest.raises(NotFound):
        MirrorRouter(app).key_store("no-such-table", b"key")
    assert MirrorRouter(app)._get_table("planet") is app.tables["planet"]


def test_faust_stops_when_a_partition_file_holds_an_offset_past_its_changelog() -> None:
    # Workaround 12: the check behind the ConsistencyError of a DATA_DIR kept across a Kafka
    # reset. When this fails, Faust changed it: see whether tables.local_store is still needed.
    source = inspect.getsource(Recovery._restart_recovery.fun)  # a Service task
    assert "active_offsets[tp] > active_highwaters[tp]" in source
    assert "raise ConsistencyError(" in source
    assert RocksDBStore.offset_key == OFFSET_KEY


def test_the_offset_faust_s_store_holds_is_read_from_its_files(tmp_path: Path) -> None:
    app = faust.App(
        "files-test", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(tmp_path)
    )
    table = app.Table("planet", partitions=4, key_type=bytes, value_type=bytes)
    Path(app.conf.tabledir).mkdir(parents=True)
    LocalTable(table).write([(b"a", b"1", 0, 4), (b"b", b"2", 2, 9), (b"c", b"3", 2, 11)])
    files = table_files(Path(app.conf.tabledir), "planet")
    assert sorted(files) == [0, 2]
    assert table.data.partition_path(2) == files[2]  # faust/stores/rocksdb.py's naming
    assert {p: persisted_offset(path) for p, path in files.items()} == {0: 4, 2: 11}
    assert table_files(Path(app.conf.tabledir), "plane") == {}
    assert table_files(tmp_path / "missing", "planet") == {}
