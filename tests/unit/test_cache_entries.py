"""Cache entries are kept for good: each holds only its own bytes (orjson over-allocates)."""

from __future__ import annotations

import tracemalloc

import orjson

from tables.cache import encode_value

ROW = {"uuid": "00000000-0000-4000-8000-000000012345", "name": "Planet 1234 of system 42"}


def _held(make: object) -> int:
    """Bytes still allocated for 1,000 values made by ``make``, while they are alive."""
    tracemalloc.start()
    try:
        values = [make() for _ in range(1_000)]  # type: ignore[operator]
        held, _ = tracemalloc.get_traced_memory()
        assert len(values) == 1_000
    finally:
        tracemalloc.stop()
    return held


def test_orjson_alone_holds_kilobytes_per_small_value() -> None:
    # The bug the copy in encode_value works around (ijl/orjson#483): about 4 KiB each.
    assert _held(lambda: orjson.dumps(ROW, default=str)) > 1_000 * 2_048


def test_a_cache_entry_holds_about_its_own_size() -> None:
    assert _held(lambda: encode_value(ROW)) < 1_000 * 512
    assert encode_value(ROW) == orjson.dumps(ROW)


def test_the_key_hash_is_kafkas_murmur2_as_aiokafka_computes_it() -> None:
    import random

    from aiokafka.partitioner import murmur2 as aiokafkas

    from tables.partitioner import key_partition, murmur2

    rng = random.Random(3)
    for length in range(70):
        for _ in range(30):
            key = bytes(rng.randrange(256) for _ in range(length))
            assert murmur2(key) & 0x7FFFFFFF == aiokafkas(key) & 0x7FFFFFFF, key
    # Values Kafka's Java client gives (kafka-python's compatibility test).
    for key, partition in [
        (b"", 681),
        (b"a", 524),
        (b"ab", 434),
        (b"abc", 107),
        (b"123456789", 566),
    ]:
        assert key_partition(key, 1000) == partition


def test_a_batch_of_keys_is_placed_as_one_key_at_a_time_would_be() -> None:
    import random

    from tables.partitioner import key_partition, key_partitions

    rng = random.Random(5)
    keys = [bytes(rng.randrange(256) for _ in range(rng.randrange(70))) for _ in range(3_000)]
    keys += [b"", b"a", b"ab", b"abc", b"123456789"] + [str(i).encode() for i in range(500)]
    rng.shuffle(keys)
    for count in (1, 4, 7, 1000):
        assert key_partitions(keys, count) == [key_partition(k, count) for k in keys]
    assert key_partitions([], 4) == []
