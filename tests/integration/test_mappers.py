"""Mappers (`@maps`): plain functions returning bulk actions, run by the real service.

A mapped row takes no task of its own on the way in; when its mapper raises, returns
something that is not actions, or one of its writes fails, it goes on as an `async def`
handler would: the same retries, the same set-aside, nothing lost while Elasticsearch is away.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from elasticsearch import AsyncElasticsearch

from tests.integration.conftest import TopicFactory
from tests.integration.service_harness import (
    CanalProducer,
    Service,
    ServiceFactory,
    TcpProxy,
    doc_count,
    eventually,
    read_records,
    row,
    settled,
    source,
    wait_count,
)

#: Fast retries so failures settle within seconds.
QUICK_RETRIES = {
    "bulk": {"initial_backoff_ms": 20, "max_backoff_ms": 200},
    "dead_letter": {"max_attempts": 3},
}

KEYS = 20
VERSIONS = 50
PARTITIONS = 3


async def _documents(es: AsyncElasticsearch, index: str) -> dict[str, dict[str, Any]]:
    await settled(lambda: es.indices.refresh(index=index))
    found = await settled(lambda: es.search(index=index, size=1000, query={"match_all": {}}))
    return {hit["_id"]: hit["_source"] for hit in found["hits"]["hits"]}


async def _counted(service: Service, **expected: int) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        stats = service.stats() or {}
        return stats if all(stats.get(k) == v for k, v in expected.items()) else None

    return await eventually(reached, timeout=30, what=f"stats {expected}", service=service)


def _headers(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


def _mapped_order(service: Service) -> dict[str, list[int]]:
    """What `mapped_users` logged: per pk, the `v` of each change in the order it was mapped."""
    seen: dict[str, list[int]] = defaultdict(list)
    for line in (service.workdir / "mapped.log").read_text().splitlines():
        pk, v = line.split()
        seen[pk].append(int(v))
    return dict(seen)


async def test_mapped_rows_are_indexed_updated_and_deleted_and_their_offsets_committed(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("mapped_users", settings=QUICK_RETRIES)
    for i in range(1, 11):
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    for i in range(1, 6):
        await canal.rows(service.topic, "users", "UPDATE", [row(i, v=1)], old=[{"v": "0"}])
    await canal.rows(service.topic, "users", "UPDATE", [row(3, name="renamed", v=1)],
                     old=[{"name": "n3"}])
    for i in (6, 7):
        await canal.rows(service.topic, "users", "DELETE", [row(i)])
    await canal.flush()

    await service.started()
    stats = await service.rows_done(18)

    expected = {str(i): {"id": i, "name": f"n{i}", "v": 1 if i <= 5 else 0}
                for i in range(1, 11) if i not in (6, 7)}
    expected["3"]["name"] = "renamed"
    assert await _documents(es, service.index) == expected
    # An INSERT's mapper returned two actions: both were written.
    names = await _documents(es, f"{service.index}-by-name")
    assert names == {f"n{i}": {"id": str(i)} for i in range(1, 11)}
    assert (stats["dead_lettered"], stats["handler_errors"], stats["handler_retries"],
            stats["rejected"]) == (0, 0, 0, 0)
    stopped = await service.stop()
    assert stopped.returncode == 0, stopped
    assert await service.committed_and_end() == {0: (18, 18)}


async def test_many_updates_of_a_few_keys_end_with_each_document_at_its_last_version(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service(
        "mapped_users", partitions=PARTITIONS,
        settings={"dispatch": {"max_rows_in_flight": 2000},
                  "kafka": {"max_poll_records": 5000}},
    )
    for v in range(1, VERSIONS + 1):  # interleaved: every key's v, then the next v
        for pk in range(KEYS):
            await canal.rows(service.topic, "users", "UPDATE", [row(pk, v=v)],
                             old=[{"v": str(v - 1)}])
    await canal.flush()  # all there before the first fetch

    await service.started()
    stats = await service.rows_done(KEYS * VERSIONS)

    for pk in range(KEYS):
        assert await source(es, service.index, str(pk)) == {"v": VERSIONS}, f"row {pk}"
    mapped = _mapped_order(service)
    for pk in range(KEYS):
        assert mapped[str(pk)] == list(range(1, VERSIONS + 1)), f"row {pk} mapped out of order"
    # Run one at a time, every row would have had a bulk request of its own.
    assert stats["bulk_requests"] < KEYS * VERSIONS // 2, (
        f"{stats['bulk_requests']} bulk requests for {KEYS * VERSIONS} rows: the rows never "
        "ran concurrently, this test proved nothing"
    )
    await service.stop()
    assert await service.lag() == dict.fromkeys(range(PARTITIONS), 0)


async def test_a_document_elasticsearch_refuses_is_dead_lettered_naming_the_mapper(
    new_service: ServiceFactory,
    canal: CanalProducer,
    es: AsyncElasticsearch,
    new_topic: TopicFactory,
    kafka_bootstrap: str,
) -> None:
    dead_letters = await new_topic()
    service = await new_service("mapped_name_as_v", settings={
        **QUICK_RETRIES, "dead_letter": {"max_attempts": 3, "topic": dead_letters},
    })
    await es.indices.create(index=service.index, mappings={"properties": {"v": {"type": "long"}}})
    await canal.rows(service.topic, "users", "INSERT", [row(1, name="1")])
    refused = await (await canal.rows(service.topic, "users", "INSERT",
                                      [row(2, name="not a number")]))
    await canal.rows(service.topic, "users", "INSERT", [row(3, name="3")])
    await canal.flush()

    await service.started()
    stats = await service.rows_done(3)

    (letter,) = await read_records(kafka_bootstrap, dead_letters, 1, service=service)
    headers = _headers(letter)
    assert headers["esupdater.source_offset"] == str(refused.offset)
    assert headers["esupdater.handler"] == "itest_handlers:name_as_v"
    assert "document_parsing_exception" in headers["esupdater.reason"]
    assert (stats["rejected"], stats["dead_lettered"]) == (1, 1)
    assert stats["handler_retries"] == 0  # a mapping error does not fix itself
    assert await _documents(es, service.index) == {"1": {"v": "1"}, "3": {"v": "3"}}
    stopped = await service.stop()
    assert stopped.returncode == 0, stopped
    assert await service.lag() == {0: 0}


async def _one_row_set_aside(
    service: Service, canal: CanalProducer, es: AsyncElasticsearch, kafka_bootstrap: str,
    dead_letters: str, name: str,
) -> dict[str, str]:
    """Rows 1, 2 (named `name`), 3 through `mapped_boom`: 1 and 3 land, 2 is dead-lettered
    after 3 attempts; returns its dead letter's headers."""
    await canal.rows(service.topic, "users", "INSERT", [row(1)])
    failing = await (await canal.rows(service.topic, "users", "INSERT", [row(2, name=name)]))
    await canal.rows(service.topic, "users", "INSERT", [row(3)])
    await canal.flush()

    await service.started()
    await wait_count(es, service.index, 2, service=service)

    (letter,) = await read_records(kafka_bootstrap, dead_letters, 1, service=service)
    headers = _headers(letter)
    assert headers["esupdater.source_offset"] == str(failing.offset)
    assert headers["esupdater.handler"] == "itest_handlers:user_document"
    assert headers["esupdater.attempts"] == "3"
    stats = await _counted(service, rows_done=3, dead_lettered=1)
    assert (stats["handler_errors"], stats["handler_retries"]) == (1, 2)
    calls = (service.workdir / "calls.log").read_text().split()
    assert calls.count("2") == 3, calls  # the mapper ran again on each attempt
    assert await source(es, service.index, "2") is None
    assert await source(es, service.index, "3") == {"id": 3, "name": "n3", "v": 0}
    stopped = await service.stop()
    assert stopped.returncode == 0, stopped
    assert await service.lag() == {0: 0}
    return headers


async def test_a_mapper_that_keeps_raising_for_a_row_is_retried_then_dead_lettered(
    new_service: ServiceFactory,
    canal: CanalProducer,
    es: AsyncElasticsearch,
    new_topic: TopicFactory,
    kafka_bootstrap: str,
) -> None:
    dead_letters = await new_topic()
    service = await new_service("mapped_boom", settings={
        **QUICK_RETRIES, "dead_letter": {"max_attempts": 3, "topic": dead_letters},
    })

    headers = await _one_row_set_aside(service, canal, es, kafka_bootstrap, dead_letters, "boom")

    assert headers["esupdater.reason"].startswith("ValueError: cannot map row 2"), headers


async def test_a_mapper_that_raises_once_per_row_is_retried_and_every_row_lands(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("mapped_raises_once", settings={
        **QUICK_RETRIES, "dead_letter": {"max_attempts": 3, "on_failure": "skip"},
    })
    for i in range(5):
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    await canal.flush()

    await service.started()
    stats = await service.rows_done(5)

    assert stats["handler_retries"] == 5
    assert (stats["handler_errors"], stats["dead_lettered"]) == (0, 0)
    assert await _documents(es, service.index) == {
        str(i): {"id": i, "name": f"n{i}", "v": 0} for i in range(5)
    }
    await service.stop()
    assert await service.lag() == {0: 0}


async def test_a_mapper_returning_something_else_than_actions_has_that_row_dead_lettered(
    new_service: ServiceFactory,
    canal: CanalProducer,
    es: AsyncElasticsearch,
    new_topic: TopicFactory,
    kafka_bootstrap: str,
) -> None:
    dead_letters = await new_topic()
    service = await new_service("mapped_boom", settings={
        **QUICK_RETRIES, "dead_letter": {"max_attempts": 3, "topic": dead_letters},
    })

    headers = await _one_row_set_aside(service, canal, es, kafka_bootstrap, dead_letters, "text")

    reason = headers["esupdater.reason"]
    assert "returned str" in reason, reason
    assert "a mapper returns one action" in reason, reason


async def test_while_elasticsearch_is_unreachable_mapped_rows_wait_and_all_land_after(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch, es_proxy: TcpProxy
) -> None:
    service = await new_service("mapped_users", settings={
        **QUICK_RETRIES,
        "elasticsearch": {"hosts": [es_proxy.url], "request_timeout": 5.0},
        # One attempt: a single failure charged to the mapper would set a row aside.
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
    for i in range(10):
        await canal.rows(service.topic, "users", "UPDATE", [row(i, v=1)], old=[{"v": "0"}])
    await canal.flush()

    async def retrying() -> bool:
        return "retrying" in service.log_since_start()

    await eventually(retrying, timeout=20, what="retries logged", service=service)
    await asyncio.sleep(2)  # several retry rounds against a refused port
    assert await doc_count(es, service.index) == 20
    ((committed, end),) = (await service.committed_and_end()).values()
    assert committed == 20  # not one record past the unreachable writes
    assert end == 50

    await es_proxy.up()
    stats = await service.rows_done(50)

    expected = {str(i): {"id": i, "name": f"n{i}", "v": 1 if i < 10 else 0} for i in range(40)}
    assert await _documents(es, service.index) == expected
    assert (stats["dead_lettered"], stats["handler_errors"], stats["rejected"]) == (0, 0, 0)
    await service.stop()
    assert await service.lag() == {0: 0}
