"""A handler's own mistakes count their attempts and are set aside: the real service.

A forgotten `await` (its offset would be committed with nothing written) and a handler's
own builtin TimeoutError (not Elasticsearch's: that one is transient).
"""

from __future__ import annotations

from elasticsearch import AsyncElasticsearch

from tests.integration.service_harness import (
    CanalProducer,
    ServiceFactory,
    doc_count,
    row,
)

SETTINGS = {
    "bulk": {"initial_backoff_ms": 50, "max_backoff_ms": 200},
    "dead_letter": {"on_failure": "skip", "max_attempts": 3},
}


async def test_a_forgotten_await_and_a_handlers_own_timeout_count_attempts_and_are_set_aside(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("mistakes", settings=SETTINGS)
    await canal.rows(service.topic, "users", "INSERT", [row(1)])
    forgot = await (await canal.rows(service.topic, "users", "INSERT", [row(2, "no-await")]))
    await canal.rows(service.topic, "users", "INSERT", [row(3, "timeout")])
    await canal.rows(service.topic, "users", "INSERT", [row(4)])
    await canal.flush()

    await service.started()
    stats = await service.rows_done(4)

    assert (stats["dead_lettered"], stats["handler_errors"]) == (2, 2)
    assert stats["handler_retries"] == 4  # 3 attempts each
    assert await doc_count(es, service.index) == 2
    # Rows of different keys run concurrently: their set-asides come in either order.
    skipped = [line for line in service.log_since_start().splitlines() if "skipped" in line]
    assert len(skipped) == 2, skipped
    unawaited = [line for line in skipped if "never awaited" in line]
    assert len(unawaited) == 1, skipped
    assert (f"ctx.index(...) was never awaited in itest_handlers:sync_user "
            f"({service.topic}/0@{forgot.offset} row 0)") in unawaited[0]
    assert sum("builtins.TimeoutError" in line for line in skipped) == 1, skipped
    await service.stop()
    assert await service.lag() == {0: 0}
