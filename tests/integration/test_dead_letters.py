"""Dead letters Kafka would refuse: too large, or no value at all (a tombstone).

The broker's default `message.max.bytes` is about 1 MiB, and so is the producer's
`max_request_size`; a record near that size, or a reason that repeats a large value, must
still end up in the dead-letter topic in some form, never in an endless retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.conftest import TopicFactory
from tests.integration.service_harness import (
    CanalProducer,
    Service,
    ServiceFactory,
    eventually,
    read_records,
    row,
)

MIB = 1024 * 1024
#: Room for records larger than the broker's default limit, on the topics that need it.
BIG_TOPIC_LIMIT = 4 * MIB
#: Larger than the default 1 MiB producer request limit and broker message limit.
BIG_VALUE = b"\xff" + bytes(range(256)) * (6 * 1024)  # 1.5 MiB, not Canal

BigTopicFactory = Callable[[], Awaitable[str]]

#: The header a pointer dead letter carries instead of the value: the value's size in bytes.
H_VALUE_OMITTED = "esupdater.value_omitted"
#: Header values are cut to this many bytes (a reason may repeat a large value).
MAX_HEADER_BYTES = 2048


@pytest.fixture
def big_topic(new_topic: TopicFactory) -> BigTopicFactory:
    """Creates topics that accept records up to BIG_TOPIC_LIMIT (new_topic deletes them)."""

    async def create() -> str:
        return await new_topic(configs={"max.message.bytes": str(BIG_TOPIC_LIMIT)})

    return create


async def _produce_big(kafka_bootstrap: str, topic: str, value: bytes) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all",
                                max_request_size=BIG_TOPIC_LIMIT)
    await producer.start()
    try:
        return int((await producer.send_and_wait(topic, value, partition=0)).offset)
    finally:
        await producer.stop()


async def _counted(service: Service, **expected: int) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        stats = service.stats() or {}
        return stats if all(stats.get(k) == v for k, v in expected.items()) else None

    return await eventually(reached, timeout=30, what=f"stats {expected}", service=service)


async def big_topic_named(big_topic: BigTopicFactory, service: Service) -> None:
    """Give `service` a source topic that accepts BIG_VALUE (its settings name the topic)."""
    service.topic = await big_topic()
    service.write_settings({"kafka": {"topics": [service.topic]}})


def _headers(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


@pytest.mark.parametrize("max_request_size", [None, BIG_TOPIC_LIMIT],
                         ids=["refused-by-the-producer", "refused-by-the-broker"])
async def test_a_record_too_large_for_the_dead_letter_topic_leaves_a_pointer_dead_letter(
    new_service: ServiceFactory,
    new_topic: TopicFactory,
    big_topic: BigTopicFactory,
    kafka_bootstrap: str,
    max_request_size: int | None,
) -> None:
    dead_letters = await new_topic()  # the broker's default limit, about 1 MiB
    extra = {} if max_request_size is None else {"max_request_size": max_request_size}
    service = await new_service("users_plain", create_topic=False,
                                settings={"dead_letter": {"topic": dead_letters, **extra}})
    await big_topic_named(big_topic, service)
    offset = await _produce_big(kafka_bootstrap, service.topic, BIG_VALUE)

    await service.started()

    (got,) = await read_records(kafka_bootstrap, dead_letters, 1, service=service)
    headers = _headers(got)
    assert got.value == b""  # the value stays in the source topic: the headers point to it
    assert headers[H_VALUE_OMITTED] == str(len(BIG_VALUE))
    assert (headers["esupdater.source_topic"], headers["esupdater.source_partition"],
            headers["esupdater.source_offset"]) == (service.topic, "0", str(offset))
    assert headers["esupdater.reason"].startswith("bad protobuf")
    await _counted(service, dead_lettered=1, dead_letters_truncated=1)
    logged = [line for line in service.log_since_start().splitlines()
              if f"{service.topic}/0@{offset}" in line and "value omitted" in line]
    assert len(logged) == 1, service.log_since_start()
    assert "ERROR" in logged[0]
    stopped = await service.stop()
    assert stopped.returncode == 0, stopped
    assert await service.lag() == {0: 0}



async def test_dead_letter_max_request_size_lets_a_large_record_through_whole(
    new_service: ServiceFactory, big_topic: BigTopicFactory, kafka_bootstrap: str
) -> None:
    dead_letters = await big_topic()
    service = await new_service("users_plain", create_topic=False, settings={
        "dead_letter": {"topic": dead_letters, "max_request_size": BIG_TOPIC_LIMIT},
    })
    await big_topic_named(big_topic, service)
    await _produce_big(kafka_bootstrap, service.topic, BIG_VALUE)

    await service.started()

    (got,) = await read_records(kafka_bootstrap, dead_letters, 1, service=service)
    assert got.value == BIG_VALUE
    assert H_VALUE_OMITTED not in _headers(got)
    await _counted(service, dead_lettered=1, dead_letters_truncated=0)


async def test_a_reason_repeating_a_700_kb_value_is_cut_and_the_record_dead_lettered_whole(
    new_service: ServiceFactory, canal: CanalProducer, new_topic: TopicFactory,
    kafka_bootstrap: str,
) -> None:
    dead_letters = await new_topic()
    service = await new_service("repeats_the_value", settings={
        "dead_letter": {"topic": dead_letters, "max_attempts": 1},
    })
    name = "x" * 700_000
    sent = await canal.rows(service.topic, "users", "INSERT", [row(1, name=name)])
    await canal.flush()
    original = await sent

    await service.started()

    (got,) = await read_records(kafka_bootstrap, dead_letters, 1, service=service)
    headers = _headers(got)
    assert len(got.value) > 700_000  # the whole Canal record, not a pointer
    assert H_VALUE_OMITTED not in headers
    assert headers["esupdater.source_offset"] == str(original.offset)
    reason = dict(got.headers)["esupdater.reason"]
    assert reason.startswith(b"ValueError: cannot use name 'xxx")
    assert len(reason) <= MAX_HEADER_BYTES
    assert b"bytes cut" in reason
    await _counted(service, dead_lettered=1, dead_letters_truncated=0)


async def test_a_tombstone_record_is_dead_lettered_without_a_value_keyed_by_its_position(
    new_service: ServiceFactory, canal: CanalProducer, new_topic: TopicFactory,
    kafka_bootstrap: str,
) -> None:
    dead_letters = await new_topic()
    service = await new_service("users_plain", settings={"dead_letter": {"topic": dead_letters}})
    tombstone = await canal.producer.send_and_wait(service.topic, None, key=b"shop.users:1",
                                                   partition=0)
    await canal.rows(service.topic, "users", "INSERT", [row(2)], partition=0)
    await canal.flush()

    await service.started()

    (got,) = await read_records(kafka_bootstrap, dead_letters, 1, service=service)
    headers = _headers(got)
    assert got.value is None
    assert got.key == f"{service.topic}/0@{tombstone.offset}".encode()
    assert headers["esupdater.source_offset"] == str(tombstone.offset)
    assert "tombstone" in headers["esupdater.reason"]
    await service.rows_done(1)
    await _counted(service, dead_lettered=1, decode_errors=1)
    stopped = await service.stop()
    assert stopped.returncode == 0, stopped
    assert await service.lag() == {0: 0}
