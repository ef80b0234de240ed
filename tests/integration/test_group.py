"""Scaling out: processes in one consumer group share the partitions; rebalances lose nothing."""

from __future__ import annotations

import asyncio
import re

from elasticsearch import AsyncElasticsearch

from tests.integration.service_harness import (
    CanalProducer,
    ServiceFactory,
    TcpProxy,
    doc_count,
    eventually,
    row,
)

ROWS = 200
ROUNDS = 30
PARTITIONS = 4

async def _produce_rounds(canal: CanalProducer, topic: str) -> None:
    """ROUNDS updates of every row, spread over a few seconds so rebalances land mid-stream."""
    for v in range(ROUNDS):
        for i in range(ROWS):
            await canal.rows(topic, "users", "UPDATE", [row(i, v=v)])
        await canal.flush()
        await asyncio.sleep(0.2)


async def _all_final(es: AsyncElasticsearch, index: str) -> bool:
    """Every row holds the last round's value."""
    return await doc_count(es, index, {"term": {"v": ROUNDS - 1}}) == ROWS


async def test_a_joining_and_a_leaving_member_share_the_stream_and_the_final_state_is_right(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    first = await (await new_service("slowish", partitions=PARTITIONS)).started()
    second = await new_service("slowish", joining=first)
    producing = asyncio.create_task(_produce_rounds(canal, first.topic))
    try:
        await asyncio.sleep(1.5)
        await second.started()  # a rebalance: the first gives up some partitions
        await asyncio.sleep(1.5)
        stopped = await first.stop()  # another: the second takes them all
        assert stopped.returncode == 0, stopped
        await asyncio.wait_for(producing, timeout=60)
    finally:
        producing.cancel()

    await eventually(lambda: _all_final(es, first.index), timeout=60,
                     what=f"every row at v={ROUNDS - 1}", service=second)
    assert await doc_count(es, first.index) == ROWS
    assert "partitions revoked" in first.log()
    assert "partitions assigned" in second.log()
    stopped = await second.stop()
    assert stopped.returncode == 0, stopped
    assert await second.lag() == dict.fromkeys(range(PARTITIONS), 0)


async def test_a_member_killed_mid_stream_and_restarted_leaves_the_right_final_state(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    first = await (await new_service("slowish", partitions=PARTITIONS)).started()
    second = await new_service("slowish", joining=first)
    producing = asyncio.create_task(_produce_rounds(canal, first.topic))
    try:
        await asyncio.sleep(1.0)
        await second.started()  # joins mid-stream
        await asyncio.sleep(1.0)
        first.kill()  # SIGKILL: its uncommitted rows are replayed by whoever gets them
        await asyncio.sleep(1.0)
        await first.started()  # and back again: a third rebalance
        await asyncio.wait_for(producing, timeout=60)
    finally:
        producing.cancel()

    await eventually(lambda: _all_final(es, first.index), timeout=90,
                     what=f"every row at v={ROUNDS - 1}", service=second)
    assert await doc_count(es, first.index) == ROWS
    for member in (first, second):
        stopped = await member.stop()
        assert stopped.returncode == 0, stopped
    assert await second.lag() == dict.fromkeys(range(PARTITIONS), 0)


async def test_a_late_write_of_a_revoked_partition_cannot_overwrite_the_new_owners(
    new_service: ServiceFactory,
    canal: CanalProducer,
    es: AsyncElasticsearch,
    es_proxy: TcpProxy,
    es_url: str,
) -> None:
    """The old owner's requests hang in Elasticsearch's socket past its drain timeout and
    land after the new owner has written newer values: `change.version` keeps them out."""
    rows = 4 * PARTITIONS
    first = await (
        await new_service("users_versioned", partitions=PARTITIONS, settings={
            "elasticsearch": {"hosts": [es_proxy.url], "request_timeout": 120},
            "bulk": {"max_requests_in_flight": 32},  # nearly every row's write on the wire at once
            # Longer than the 6 s session timeout: the group must wait for this drain
            # rather than evict the member (it would then hand partitions over mid-write).
            "runtime": {"drain_timeout_seconds": 8.0},
        })
    ).started()

    async def produce(v: int) -> None:
        for i in range(rows):
            await canal.rows(first.topic, "users", "UPDATE", [row(i, v=v)],
                             partition=i % PARTITIONS)
        await canal.flush()

    async def at(v: int, ids: list[int]) -> bool:
        query = {"bool": {"filter": [{"term": {"v": v}},
                                     {"terms": {"id": [str(i) for i in ids]}}]}}
        return await doc_count(es, first.index, query) == len(ids)

    await produce(0)
    await eventually(lambda: at(0, list(range(rows))), timeout=30, what="v=0 indexed")

    es_proxy.stall()  # the first member's Elasticsearch stops answering
    await produce(1)

    async def stuck() -> bool:
        return int((first.stats() or {}).get("in_flight", 0)) == rows

    await eventually(stuck, timeout=30, what="every v=1 row in flight", service=first)
    await asyncio.sleep(0.5)  # the lanes send what they hold

    second = await new_service("users_versioned", joining=first,
                               settings={"elasticsearch": {"hosts": [es_url]}})
    await second.started()  # the first gives partitions up after its drain timeout
    moved = {int(p) for p in re.findall(rf"{first.topic}/(\d+)", second.log_since_start())}
    assert 0 < len(moved) < PARTITIONS, second.log_since_start()  # the first kept some
    moved_rows = [i for i in range(rows) if i % PARTITIONS in moved]

    await produce(2)
    await eventually(lambda: at(2, moved_rows), timeout=30, what="the new owner's v=2",
                     service=second)

    es_proxy.flow()  # the old owner's v=1 requests reach Elasticsearch now

    async def refused() -> int:
        return int((first.stats() or {}).get("stale_writes", 0))

    await eventually(refused, timeout=60, what="the late writes refused", service=first)
    await eventually(lambda: at(2, list(range(rows))), timeout=60, what="every row at v=2",
                     service=first)
    await asyncio.sleep(1.0)  # nothing else arrives late
    assert await at(2, list(range(rows)))
    assert "unfinished: cancelled, left uncommitted" in first.log()


#: More rows per record than the pool holds: feeding waits for a slot mid-record.
ROWS_PER_RECORD = 6


def _stale_starts(log: str, topic: str) -> list[str]:
    """Handler starts that continue a revoked partition's feeding: between its revocation and
    its next assignment, or, after that, a first row that is not the start of a record (a new
    assignment fetches again from the committed offset, a record boundary)."""
    revoked: set[int] = set()  # revoked and not yet handling again
    violations: list[str] = []
    for line in log.splitlines():
        if "partitions revoked:" in line:
            revoked |= {int(p) for p in re.findall(rf"{topic}/(\d+)", line)}
        elif line.startswith("=====") and " run " in line:
            revoked.clear()  # a new process
        elif found := re.search(rf"handling {topic}/(\d+)@(\d+)#(\d+)", line):
            partition, row_index = int(found[1]), int(found[3])
            if partition in revoked:
                revoked.discard(partition)
                if row_index != 0:
                    violations.append(line)
    return violations


async def test_no_row_of_a_revoked_partition_runs_after_the_revocation_with_a_full_pool(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    """Eager rebalances revoke every partition and hand most straight back; with the pool
    full and records longer than the pool, feeding waits for a slot mid-record when that
    happens. Nothing of the old assignment may run after the revocation, and the process
    must not trip over the records it fetches again."""
    rounds = 40
    rows = ROWS_PER_RECORD * PARTITIONS
    settings = {"dispatch": {"max_rows_in_flight": 4}, "kafka": {"max_poll_records": 20}}
    first = await (
        await new_service("saturating", partitions=PARTITIONS, settings=settings)
    ).started()

    async def produce() -> None:
        for v in range(rounds):
            for p in range(PARTITIONS):
                ids = range(p * ROWS_PER_RECORD, (p + 1) * ROWS_PER_RECORD)
                await canal.rows(first.topic, "users", "UPDATE", [row(i, v=v) for i in ids],
                                 partition=p)
        await canal.flush()

    await produce()
    second = await new_service("saturating", joining=first)
    for _ in range(4):  # four joins and four leaves while the first member is saturated
        await second.started()
        await asyncio.sleep(0.3)
        stopped = await second.stop()
        assert stopped.returncode == 0, stopped
    await eventually(lambda: _all_at(es, first.index, rows, rounds - 1), timeout=120,
                     what="every row at the last round", service=first)
    stopped = await first.stop()
    assert stopped.returncode == 0, stopped
    assert "tracked after" not in first.log() + second.log()
    assert first.log().count("partitions revoked") >= 8, first.log()[-5000:]
    assert _stale_starts(first.log(), first.topic) == []
    assert await first.lag() == dict.fromkeys(range(PARTITIONS), 0)


async def _all_at(es: AsyncElasticsearch, index: str, rows: int, v: int) -> bool:
    return await doc_count(es, index, {"term": {"v": v}}) == rows
