"""Per-document order: one row's changes apply in binlog order, whatever the concurrency."""

from __future__ import annotations

from collections import defaultdict

from elasticsearch import AsyncElasticsearch

from tests.integration.service_harness import (
    CanalProducer,
    Service,
    ServiceFactory,
    row,
    source,
)

HOT_UPDATES = 500
COLD_ROWS = 50
PARTITIONS = 3

async def _produce_interleaved(canal: CanalProducer, topic: str) -> dict[str, int]:
    """500 updates of row 0 with 500 updates spread over rows 1..50; returns the last v's."""
    last: dict[str, int] = defaultdict(int)
    for step in range(HOT_UPDATES):
        for pk in (0, 1 + step % COLD_ROWS):
            last[str(pk)] += 1
            v = last[str(pk)]
            await canal.rows(topic, "users", "UPDATE", [row(pk, v=v)], old=[{"v": str(v - 1)}])
    await canal.flush()
    return dict(last)


async def _applied_in_order(
    service: Service, es: AsyncElasticsearch, last: dict[str, int]
) -> None:
    await service.rows_done(sum(last.values()), timeout=60)

    for pk, v in last.items():
        assert await source(es, service.index, pk) == {"v": v}, f"row {pk}"
    applied: dict[str, list[int]] = defaultdict(list)
    for line in (service.workdir / "applied.log").read_text().splitlines():
        pk, v = line.split()
        applied[pk].append(int(v))
    for pk, v in last.items():
        assert applied[pk] == list(range(1, v + 1)), f"row {pk} acknowledged out of order"
    peak = int((service.workdir / "peak").read_text())
    assert peak > 1, "the changes never ran concurrently: this test proved nothing"


async def test_500_updates_of_one_row_fetched_at_once_end_with_the_last_value(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service(
        "order_logging", params={"sleep": 0}, partitions=PARTITIONS,
        settings={"dispatch": {"max_rows_in_flight": 2000},
                  "kafka": {"max_poll_records": 5000}},
    )
    last = await _produce_interleaved(canal, service.topic)  # all there before the first fetch

    await service.started()

    await _applied_in_order(service, es, last)


async def test_handlers_sleeping_at_random_still_apply_each_rows_changes_in_binlog_order(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service(
        "order_logging", params={"sleep": 0.005}, partitions=PARTITIONS,
        settings={"dispatch": {"max_rows_in_flight": 2000},
                  "kafka": {"max_poll_records": 5000}},
    )
    last = await _produce_interleaved(canal, service.topic)

    await service.started()

    await _applied_in_order(service, es, last)


async def test_a_truncate_runs_after_the_tables_earlier_rows_and_before_its_later_ones(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("truncating",
                                settings={"dispatch": {"max_rows_in_flight": 500}})
    for i in range(60):
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    await canal.ddl(service.topic, "users", "TRUNCATE", "TRUNCATE TABLE users")
    for i in range(100, 160):
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    await canal.flush()  # all of it fetched at once: without a barrier it all runs together

    await service.started()
    await service.rows_done(121, timeout=60)

    await es.indices.refresh(index=service.index)
    found = await es.search(index=service.index, size=200, query={"match_all": {}})
    ids = sorted(int(hit["_id"]) for hit in found["hits"]["hits"])
    assert ids == list(range(100, 160))
