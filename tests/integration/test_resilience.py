"""Failures: handlers that raise, documents Elasticsearch refuses, Elasticsearch out of reach."""

from __future__ import annotations

import asyncio

from elasticsearch import AsyncElasticsearch

from tests.integration.conftest import TopicFactory
from tests.integration.service_harness import (
    CanalProducer,
    ServiceFactory,
    TcpProxy,
    doc_count,
    eventually,
    read_records,
    row,
    source,
    wait_count,
)

#: Fast retries so failures settle within seconds.
QUICK_RETRIES = {
    "bulk": {"initial_backoff_ms": 50, "max_backoff_ms": 500},
    "dead_letter": {"max_attempts": 3},
}


async def test_a_handler_that_keeps_raising_is_retried_then_dead_lettered_and_the_stream_goes_on(
    new_service: ServiceFactory,
    canal: CanalProducer,
    es: AsyncElasticsearch,
    new_topic: TopicFactory,
    kafka_bootstrap: str,
) -> None:
    dead_letters = await new_topic()
    service = await new_service("boom", settings={
        **QUICK_RETRIES, "dead_letter": {"max_attempts": 3, "topic": dead_letters},
    })
    await canal.rows(service.topic, "users", "INSERT", [row(1)])
    boom = await (await canal.rows(service.topic, "users", "INSERT", [row(2, name="boom")]))
    await canal.rows(service.topic, "users", "INSERT", [row(3)])
    await canal.flush()

    await service.started()
    await wait_count(es, service.index, 2, service=service)

    (letter,) = await read_records(kafka_bootstrap, dead_letters, 1)
    headers = {k: v.decode() for k, v in letter.headers}  # type: ignore[attr-defined]
    assert headers["esupdater.source_offset"] == str(boom.offset)
    assert headers["esupdater.handler"] == "itest_handlers:sync_user"
    assert headers["esupdater.attempts"] == "3"
    assert "cannot handle row 2" in headers["esupdater.reason"]

    async def counted() -> dict[str, object] | None:
        stats = service.stats()
        return stats if stats and stats.get("dead_lettered") == 1 else None

    stats = await eventually(counted, timeout=20, what="dead_lettered == 1", service=service)
    assert stats["handler_errors"] == 1
    assert stats["handler_retries"] == 2
    await service.stop()
    assert await service.lag() == {0: 0}


async def test_a_document_elasticsearch_refuses_is_set_aside_without_retries(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("name_as_v", settings={
        **QUICK_RETRIES, "dead_letter": {"on_failure": "skip"},
    })
    await es.indices.create(index=service.index, mappings={"properties": {"v": {"type": "long"}}})
    await canal.rows(service.topic, "users", "INSERT", [row(1, name="1")])
    refused = await (await canal.rows(service.topic, "users", "INSERT",
                                      [row(2, name="not a number")]))
    await canal.rows(service.topic, "users", "INSERT", [row(3, name="3")])
    await canal.flush()

    await service.started()
    stats = await service.rows_done(3)

    assert stats["rejected"] == 1
    assert stats["handler_retries"] == 0  # a mapping error does not fix itself
    assert stats["dead_lettered"] == 1
    assert await doc_count(es, service.index) == 2
    assert await source(es, service.index, "2") is None
    skipped = [line for line in service.log_since_start().splitlines() if "skipped" in line]
    assert len(skipped) == 1, service.log_since_start()
    assert f"{service.topic}/0@{refused.offset}" in skipped[0]
    assert "document_parsing_exception" in skipped[0]


async def test_while_elasticsearch_is_unreachable_rows_wait_uncommitted_and_are_never_set_aside(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch, es_proxy: TcpProxy
) -> None:
    service = await new_service("boom", settings={
        **QUICK_RETRIES,
        "elasticsearch": {"hosts": [es_proxy.url], "request_timeout": 5.0},
        "dead_letter": {"on_failure": "skip", "max_attempts": 1},
    })
    for i in range(20):
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    await canal.flush()
    await service.started()
    await wait_count(es, service.index, 20, service=service)

    await es_proxy.down()
    for i in range(20, 40):
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    await canal.flush()

    async def retrying() -> bool:
        return "retrying" in service.log_since_start()

    await eventually(retrying, timeout=20, what="retries logged", service=service)
    await asyncio.sleep(2)  # several retry rounds against a refused port
    assert await doc_count(es, service.index) == 20
    ((committed, end),) = (await service.committed_and_end()).values()
    assert committed == 20  # not one record past the unreachable writes
    assert end == 40

    await es_proxy.up()
    await wait_count(es, service.index, 40, service=service)

    stats = await service.rows_done(40)
    assert stats["dead_lettered"] == 0
    assert stats["handler_errors"] == 0
    assert stats["rejected"] == 0
    await service.stop()
    assert await service.lag() == {0: 0}
