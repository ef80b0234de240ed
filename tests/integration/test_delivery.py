"""Nothing is lost: offsets are committed only after Elasticsearch acknowledged, stops drain."""

from __future__ import annotations

import random

from aiokafka.structs import RecordMetadata
from elasticsearch import AsyncElasticsearch

from tests.integration.service_harness import (
    CanalProducer,
    ServiceFactory,
    doc_count,
    eventually,
    row,
    settled,
    wait_count,
)

ROWS = 5000
VERSIONS = 4  # INSERT v=0, then UPDATE v=1..3: 20,000 changes
PARTITIONS = 3


async def _documents(es: AsyncElasticsearch, index: str) -> dict[str, dict[str, object]]:
    await settled(lambda: es.indices.refresh(index=index))
    found = await settled(lambda: es.search(index=index, size=ROWS + 100,
                                            query={"match_all": {}}))
    return {hit["_id"]: hit["_source"] for hit in found["hits"]["hits"]}


async def test_a_sigkill_mid_stream_loses_nothing_after_a_restart(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("slowish", partitions=PARTITIONS)
    sent: list[tuple[int, int, RecordMetadata]] = []  # (id, v, where it went)
    futures = []
    for v in range(VERSIONS):
        kind = "INSERT" if v == 0 else "UPDATE"
        for i in range(ROWS):
            old = None if v == 0 else [{"v": str(v - 1)}]
            futures.append((i, v, await canal.rows(service.topic, "users", kind,
                                                   [row(i, v=v)], old=old)))
    await canal.flush()
    sent = [(i, v, await future) for i, v, future in futures]

    service.start()

    async def some_done() -> bool:
        return ((service.stats() or {}).get("rows_done") or 0) >= ROWS

    await eventually(some_done, timeout=60, what=f">= {ROWS} rows done", service=service)
    service.kill()

    # What the crash left: every committed record must already be in Elasticsearch.
    at_kill = await service.committed_and_end()
    docs = await _documents(es, service.index)
    final = sum(1 for doc in docs.values() if doc["v"] == VERSIONS - 1)
    assert final < ROWS, "everything was done before the kill: this test proved nothing"
    assert any(c is not None and c < end for c, end in at_kill.values()), at_kill
    for i, v, meta in sent:
        committed = at_kill[meta.partition][0]
        if committed is not None and meta.offset < committed:
            doc = docs.get(str(i))
            assert doc is not None, f"row {i} committed at {meta.partition}@{meta.offset}, absent"
            assert int(doc["v"]) >= v, (  # type: ignore[call-overload]
                f"row {i} v={v} committed at {meta.partition}@{meta.offset}, ES has {doc}"
            )

    await service.started()
    await wait_count(es, service.index, ROWS, service=service)

    async def all_final() -> bool:
        return await doc_count(es, service.index, {"term": {"v": VERSIONS - 1}}) == ROWS

    await eventually(all_final, timeout=60, what=f"every row at v={VERSIONS - 1}",
                     service=service)
    docs = await _documents(es, service.index)
    assert len(docs) == ROWS
    for i in random.sample(range(ROWS), 200):
        assert docs[str(i)] == {"id": i, "name": f"n{i}", "v": VERSIONS - 1}
    stopped = await service.stop()
    assert stopped.returncode == 0, stopped
    assert await service.lag() == dict.fromkeys(range(PARTITIONS), 0)


async def test_a_graceful_stop_finishes_in_flight_rows_and_commits_every_partition_to_its_end(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service(
        "drainable", params={"slow_seconds": 2}, partitions=PARTITIONS,
        # No periodic commit within the test: only the stop's own commit can move offsets.
        settings={"kafka": {"commit_interval_ms": 600_000}},
    )
    for i in range(300):
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    for p in range(PARTITIONS):  # one slow row last in every partition
        await canal.rows(service.topic, "users", "INSERT", [row(1000 + p, name="slow")],
                         partition=p)
    await canal.flush()
    await service.started()
    await wait_count(es, service.index, 300, service=service)

    async def slow_ones_in_flight() -> bool:
        return len(list(service.workdir.glob("started-*"))) == PARTITIONS

    await eventually(slow_ones_in_flight, timeout=30, what="slow rows started", service=service)
    assert await doc_count(es, service.index) == 300  # they are still in the handler
    assert all(c is None for c, _ in (await service.committed_and_end()).values())

    stopped = await service.stop()

    assert stopped.returncode == 0, stopped
    assert await doc_count(es, service.index) == 300 + PARTITIONS
    assert await service.lag() == dict.fromkeys(range(PARTITIONS), 0)
    assert "abandoned" not in service.log_since_start()


async def test_rows_still_running_at_the_drain_timeout_stay_uncommitted_and_replay(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service(
        "drainable", params={"slow_seconds": 60},
        settings={"runtime": {"drain_timeout_seconds": 1.0}},
    )
    for i in range(10):
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    stuck = await (await canal.rows(service.topic, "users", "INSERT", [row(10, name="slow")]))
    await canal.rows(service.topic, "users", "INSERT", [row(11)])
    await canal.flush()
    await service.started()
    await wait_count(es, service.index, 11, service=service)  # all but the stuck one

    async def stuck_started() -> bool:
        return (service.workdir / "started-10").exists()

    await eventually(stuck_started, timeout=30, what="stuck row started", service=service)

    stopped = await service.stop()

    assert stopped.returncode == 0, stopped
    assert "abandoned" in service.log_since_start()
    ((committed, end),) = (await service.committed_and_end()).values()
    assert committed == stuck.offset  # everything before it, nothing from it on
    assert end == stuck.offset + 2

    service.write_handlers("drainable", {"slow_seconds": 0})  # the "fix"
    await service.started()
    await wait_count(es, service.index, 12, service=service)
    await service.stop()
    assert await service.lag() == {0: 0}
