"""Bad input never stops the stream and is never dropped silently."""

from __future__ import annotations

import random

from elasticsearch import AsyncElasticsearch

from esupdater.canal import flat_message
from tests.integration.conftest import TopicFactory
from tests.integration.service_harness import (
    MYSQL_TYPES,
    CanalProducer,
    ServiceFactory,
    eventually,
    read_records,
    row,
    settled,
    wait_count,
)

#: Not Canal: 0xFF is no valid protobuf field tag, and the rest is noise.
RANDOM_BYTES = b"\xff" + random.Random(7).randbytes(64)
#: A flat message cut off mid-way.
TRUNCATED_JSON = flat_message("shop", "users", "INSERT", [row(999)], mysql_types=MYSQL_TYPES)[:40]
#: Valid JSON, but not a Canal message.
NOT_CANAL_JSON = b'{"hello": "world"}'
BAD = (RANDOM_BYTES, TRUNCATED_JSON, NOT_CANAL_JSON)


async def _interleave(canal: CanalProducer, topic: str) -> list[int]:
    """Five good rows, a bad record, five good rows, ...; returns the bad records' offsets."""
    bad_offsets = []
    for n, bad in enumerate(BAD):
        for i in range(5 * n, 5 * n + 5):
            await canal.rows(topic, "users", "INSERT", [row(i)], partition=0)
        bad_offsets.append((await canal.send_and_wait(topic, bad, partition=0)).offset)
    for i in range(15, 20):
        await canal.rows(topic, "users", "INSERT", [row(i)], partition=0)
    await canal.flush()
    return bad_offsets


async def test_undecodable_records_are_counted_logged_with_their_position_and_skipped(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("users_plain", settings={"dead_letter": {"on_failure": "skip"}})
    bad_offsets = await _interleave(canal, service.topic)

    await service.started()
    await wait_count(es, service.index, 20, service=service)

    async def counted() -> dict[str, object] | None:
        stats = service.stats()
        done = stats and stats.get("decode_errors") == len(BAD) and stats.get("rows_done") == 20
        return stats if done else None

    await eventually(counted, timeout=20, what="decode_errors == 3 and rows_done == 20",
                     service=service)
    assert not service.exited
    log = service.log_since_start()
    for offset in bad_offsets:
        lines = [line for line in log.splitlines() if f"{service.topic}/0@{offset}" in line]
        assert len(lines) == 1, f"offset {offset} logged {len(lines)} times:\n{log}"
    stopped = await service.stop()
    assert stopped.returncode == 0, stopped
    assert await service.lag() == {0: 0}  # set aside counts as done: the commit passes them


async def test_undecodable_records_go_to_the_dead_letter_topic_with_reason_and_position(
    new_service: ServiceFactory,
    canal: CanalProducer,
    es: AsyncElasticsearch,
    new_topic: TopicFactory,
    kafka_bootstrap: str,
) -> None:
    dead_letters = await new_topic()
    service = await new_service("users_plain", settings={"dead_letter": {"topic": dead_letters}})
    bad_offsets = await _interleave(canal, service.topic)

    await service.started()
    await wait_count(es, service.index, 20, service=service)

    got = await read_records(kafka_bootstrap, dead_letters, len(BAD), service=service)
    assert [r.value for r in got] == list(BAD)  # the original bytes, in order
    for record, offset in zip(got, bad_offsets, strict=True):
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["esupdater.source_topic"] == service.topic
        assert headers["esupdater.source_partition"] == "0"
        assert headers["esupdater.source_offset"] == str(offset)
        assert headers["esupdater.reason"]

    async def counted() -> bool:
        stats = service.stats() or {}
        return stats.get("dead_lettered") == stats.get("decode_errors") == len(BAD)

    await eventually(counted, timeout=20, what="dead letters counted", service=service)
    await service.stop()
    assert await service.lag() == {0: 0}


async def test_in_block_mode_an_undecodable_record_holds_only_its_own_partition(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service(  # on_failure = "block" and no topic: the defaults
        "users_plain", partitions=2, settings={"runtime": {"drain_timeout_seconds": 2.0}}
    )
    bad = await canal.send_and_wait(service.topic, RANDOM_BYTES, partition=0)
    for i in range(10):
        await canal.rows(service.topic, "users", "INSERT", [row(i)], partition=i % 2)
    await canal.flush()

    await service.started()

    async def partition_1_applied() -> bool:
        ids = [str(i) for i in range(1, 10, 2)]
        found = await settled(lambda: es.mget(index=service.index, ids=ids))
        return all(doc.get("found") for doc in found["docs"])

    await eventually(partition_1_applied, timeout=30, what="partition 1's rows applied",
                     service=service)

    async def blocked() -> bool:
        return f"BLOCKED {service.topic}/0@{bad.offset}" in service.log_since_start()

    await eventually(blocked, timeout=20, what="BLOCKED logged", service=service)
    stopped = await service.stop()
    assert stopped.returncode == 0, stopped
    offsets = await service.committed_and_end()
    assert offsets[0][0] is None  # never past the bad record (offset 0)
    assert offsets[1][0] == offsets[1][1]
    # Rows fetched with the bad record may have been applied, but uncommitted they replay.
