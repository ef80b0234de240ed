"""Scaling out: processes in one consumer group share the partitions; rebalances lose nothing."""

from __future__ import annotations

import asyncio

from elasticsearch import AsyncElasticsearch

from tests.integration.service_harness import (
    CanalProducer,
    ServiceFactory,
    doc_count,
    eventually,
    row,
)

ROWS = 200
ROUNDS = 30
PARTITIONS = 4

SLOWISH = """
import asyncio, random
from esupdater import on

@on("shop.users")
async def sync_user(change, ctx):
    await asyncio.sleep(random.random() * 0.004)
    await ctx.index(index=INDEX, id=change.pk, doc=change.row)
"""


async def _produce_rounds(canal: CanalProducer, topic: str) -> None:
    """ROUNDS updates of every row, spread over a few seconds so rebalances land mid-stream."""
    for v in range(ROUNDS):
        for i in range(ROWS):
            await canal.rows(topic, "users", "UPDATE", [row(i, v=v)])
        await canal.flush()
        await asyncio.sleep(0.2)


async def test_a_joining_and_a_leaving_member_share_the_stream_and_the_final_state_is_right(
    esupdater: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    first = await (await esupdater(SLOWISH, partitions=PARTITIONS)).started()
    second = await esupdater(SLOWISH, joining=first)
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

    async def all_final() -> bool:
        return await doc_count(es, first.index, {"term": {"v": ROUNDS - 1}}) == ROWS

    await eventually(all_final, timeout=60, what=f"every row at v={ROUNDS - 1}", service=second)
    assert await doc_count(es, first.index) == ROWS
    assert "partitions revoked" in first.log()
    assert "partitions assigned" in second.log()
    stopped = await second.stop()
    assert stopped.returncode == 0, stopped
    assert await second.lag() == dict.fromkeys(range(PARTITIONS), 0)


async def test_a_member_killed_mid_stream_and_restarted_leaves_the_right_final_state(
    esupdater: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    first = await (await esupdater(SLOWISH, partitions=PARTITIONS)).started()
    second = await esupdater(SLOWISH, joining=first)
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

    async def all_final() -> bool:
        return await doc_count(es, first.index, {"term": {"v": ROUNDS - 1}}) == ROWS

    await eventually(all_final, timeout=90, what=f"every row at v={ROUNDS - 1}", service=second)
    assert await doc_count(es, first.index) == ROWS
    for member in (first, second):
        stopped = await member.stop()
        assert stopped.returncode == 0, stopped
    assert await second.lag() == dict.fromkeys(range(PARTITIONS), 0)
