"""Elasticsearch refusing writes for a reason outside the rows: held loudly, never set aside.

A write block, an index that does not exist and may not be created, revoked credentials:
the real `esupdater run` with `on_failure = "skip"` (where a wrong "refused" would lose the
rows silently) must keep the rows, keep the offset behind them, log errors, and apply and
commit them once the cause is fixed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from elasticsearch import AsyncElasticsearch

from tests.integration.es_edge import es_edge, request_error
from tests.integration.service_harness import (
    CanalProducer,
    Service,
    ServiceFactory,
    doc_count,
    eventually,
    row,
    wait_count,
)

#: Fast retries; `skip` and one attempt: the settings under which a misfiled failure is lost.
SETTINGS = {
    "bulk": {"initial_backoff_ms": 50, "max_backoff_ms": 500},
    "dead_letter": {"on_failure": "skip", "max_attempts": 1},
}

#: Rows written before the trouble (applied and committed) and while it lasts (held).
BEFORE, DURING = 1, 5


async def produce(canal: CanalProducer, service: Service, ids: range) -> None:
    for i in ids:
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    await canal.flush()


async def assert_held_then_applied(
    service: Service, es: AsyncElasticsearch, error_type: str,
    fix: Callable[[], Awaitable[None]],
) -> None:
    """The DURING rows are held while `error_type` lasts; `fix()` lets them through."""

    def loud() -> list[str]:
        return [line for line in service.log_since_start().splitlines()
                if " ERROR " in line and error_type in line]

    async def logged() -> bool:
        return len(loud()) >= 3

    await eventually(logged, timeout=30, what=f"{error_type} logged as errors", service=service)
    await asyncio.sleep(1.0)  # more retry rounds: still nothing may be set aside
    assert "held" in loud()[0], loud()[0]
    stats = service.stats() or {}
    assert (stats.get("dead_lettered"), stats.get("rejected"), stats.get("handler_errors")) == (
        0, 0, 0), stats
    assert stats.get("rows_done") == BEFORE
    assert stats.get("es_held", 0) >= 3, stats  # counted apart from a busy server's retries
    ((committed, end),) = (await service.committed_and_end()).values()
    assert (committed, end) == (BEFORE, BEFORE + DURING)  # not one record past them

    await fix()
    await wait_count(es, f"{service.index}*", BEFORE + DURING, service=service)
    stats = await service.rows_done(BEFORE + DURING)
    assert stats["dead_lettered"] == 0
    await service.stop()
    assert await service.lag() == {0: 0}


async def test_a_write_blocked_index_holds_the_partition_instead_of_setting_rows_aside(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("users_plain", settings=SETTINGS)
    await es.indices.create(index=service.index)
    await service.started()
    await produce(canal, service, range(BEFORE))
    await wait_count(es, service.index, BEFORE, service=service)

    await es.indices.put_settings(index=service.index, settings={"index.blocks.write": True})
    await produce(canal, service, range(BEFORE, BEFORE + DURING))

    async def unblock() -> None:
        await es.indices.put_settings(index=service.index,
                                      settings={"index.blocks.write": None})

    await assert_held_then_applied(service, es, "cluster_block_exception", unblock)


@asynccontextmanager
async def auto_create_forbidden(es: AsyncElasticsearch, pattern: str) -> AsyncIterator[None]:
    """Indices matching `pattern` (this test's own) may not be created by a write.

    A dynamic cluster setting: the pattern forbids only this test's names, every other
    index may still be created (`+*`), and the default comes back afterwards.
    """
    await es.cluster.put_settings(
        persistent={"action.auto_create_index": f"-{pattern},+*"}
    )
    try:
        yield
    finally:
        await es.cluster.put_settings(persistent={"action.auto_create_index": None})


async def test_an_index_that_does_not_exist_holds_the_partition_until_it_is_created(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service(  # the DURING rows go to an index of their own
        "users_late_index", params={"late_from": BEFORE}, settings=SETTINGS)
    late = f"{service.index}-late"
    await service.started()
    await produce(canal, service, range(BEFORE))
    await wait_count(es, service.index, BEFORE, service=service)

    async with auto_create_forbidden(es, f"{late}*"):
        await produce(canal, service, range(BEFORE, BEFORE + DURING))

        async def create() -> None:
            await es.indices.create(index=late)

        await assert_held_then_applied(service, es, "index_not_found_exception", create)
    assert await doc_count(es, late) == DURING


async def test_a_401_holds_the_partition_instead_of_setting_rows_aside(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch, es_url: str
) -> None:
    """Credentials revoked mid-stream: the local server has no security, so an edge relay
    in front of it answers the bulk requests with 401 until the test restores them."""
    async with es_edge(es_url) as edge:
        service = await new_service("users_plain", settings={
            **SETTINGS, "elasticsearch": {"hosts": [edge.url], "request_timeout": 5.0},
        })
        await service.started()
        await produce(canal, service, range(BEFORE))
        await wait_count(es, service.index, BEFORE, service=service)

        edge.answer = lambda n, actions: request_error(
            401, "security_exception", "unable to authenticate with provided credentials")
        await produce(canal, service, range(BEFORE, BEFORE + DURING))

        async def restore() -> None:
            edge.answer = lambda n, actions: None

        await assert_held_then_applied(service, es, "security_exception", restore)
        assert await doc_count(es, service.index) == BEFORE + DURING
