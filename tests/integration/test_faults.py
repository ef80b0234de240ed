"""Faults of the real servers and of handlers: nothing lost, nothing stuck, redrive after a fix.

These tests stop and start the shared local stack's servers (stack/stack.sh), and always
start them again, even when they fail.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator

import pytest
from elasticsearch import AsyncElasticsearch

from tests.integration.conftest import TopicFactory
from tests.integration.service_harness import (
    STACK_SCRIPT,
    CanalProducer,
    ServiceFactory,
    eventually,
    row,
    source,
    stack,
    wait_count,
)

QUICK_RETRIES = {"bulk": {"initial_backoff_ms": 50, "max_backoff_ms": 1000}}


@pytest.fixture
async def restartable() -> AsyncIterator[None]:
    """Whatever a test stops, the stack is whole again afterwards."""
    try:
        yield
    finally:
        await stack("start", "kafka")
        await stack("start", "elasticsearch")


async def _produce(canal: CanalProducer, topic: str, ids: range, v: int = 0) -> None:
    kind = "INSERT" if v == 0 else "UPDATE"
    for i in ids:
        await canal.rows(topic, "users", kind, [row(i, v=v)])
    await canal.flush()


async def test_elasticsearch_stopped_for_20_s_mid_stream_loses_nothing_and_resumes_by_itself(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch, restartable: None
) -> None:
    service = await new_service("slowish", partitions=2, settings=QUICK_RETRIES)
    await _produce(canal, service.topic, range(3000))
    await service.started()

    async def some_done() -> bool:
        return ((service.stats() or {}).get("rows_done") or 0) >= 300

    await eventually(some_done, timeout=60, what="300 rows done", service=service)
    await stack("stop", "elasticsearch")
    await _produce(canal, service.topic, range(3000), v=1)  # every row updated meanwhile
    await asyncio.sleep(20)
    assert service.returncode is None, "esupdater exited while Elasticsearch was down"
    await stack("start", "elasticsearch")

    await wait_count(es, service.index, 3000, timeout=120, service=service)
    stats = await service.rows_done(6000, timeout=120)
    assert (stats["dead_lettered"], stats["handler_errors"], stats["rejected"]) == (0, 0, 0)
    for i in (0, 1499, 2999):
        assert (await source(es, service.index, str(i)) or {}).get("v") == 1
    await service.stop()
    assert set((await service.lag()).values()) == {0}


async def test_a_kafka_broker_restart_mid_stream_loses_nothing(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch, restartable: None
) -> None:
    service = await new_service("slowish", partitions=2, settings=QUICK_RETRIES)
    await _produce(canal, service.topic, range(2000))
    await service.started()

    async def some_done() -> bool:
        return ((service.stats() or {}).get("rows_done") or 0) >= 200

    await eventually(some_done, timeout=60, what="200 rows done", service=service)
    await stack("stop", "kafka")
    await asyncio.sleep(5)
    assert service.returncode is None, "esupdater exited while Kafka was down"
    await stack("start", "kafka")
    await _produce(canal, service.topic, range(2000, 3000))

    await wait_count(es, service.index, 3000, timeout=120, service=service)
    await service.stop(timeout=60)
    assert set((await service.lag()).values()) == {0}
    assert "Traceback" not in service.log()


async def test_a_handler_that_raises_once_is_retried_and_succeeds(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("raises_once", settings={
        "bulk": {"initial_backoff_ms": 20, "max_backoff_ms": 100},
        "dead_letter": {"max_attempts": 3, "on_failure": "skip"},
    })
    await _produce(canal, service.topic, range(5))
    await service.started()

    stats = await service.rows_done(5)
    assert stats["handler_retries"] == 5
    assert (stats["handler_errors"], stats["dead_lettered"]) == (0, 0)
    await wait_count(es, service.index, 5, service=service)


async def test_redrive_applies_dead_letters_after_a_fix_and_reports_what_failed_again(
    new_service: ServiceFactory,
    canal: CanalProducer,
    es: AsyncElasticsearch,
    new_topic: TopicFactory,
) -> None:
    dead_letters = await new_topic()
    service = await new_service("boom", settings={
        "bulk": {"initial_backoff_ms": 20, "max_backoff_ms": 100},
        "dead_letter": {"max_attempts": 2, "topic": dead_letters},
    })
    await canal.rows(service.topic, "users", "INSERT", [row(1), row(2, name="boom")])
    await canal.rows(service.topic, "users", "INSERT", [row(3, name="boom forever")])
    await canal.rows(service.topic, "users", "INSERT", [row(4)])
    await canal.flush()
    await service.started()
    stats = await service.rows_done(4)
    assert stats["dead_lettered"] == 2
    await service.stop()
    assert await source(es, service.index, "2") is None

    (service.workdir / "fixed").touch()  # the fix ships
    ran = await service.cli("redrive")
    assert ran.returncode == 1, ran  # one record still fails
    assert "2 record(s): 1 applied, 0 stale, 0 with no handler now, 1 failed again" in (
        ran.output), ran
    assert (await source(es, service.index, "2") or {}).get("name") == "boom"
    assert await source(es, service.index, "1") is not None

    again = await service.cli("redrive")  # only the re-dead-lettered one is left
    assert "1 record(s): 0 applied, 0 stale, 0 with no handler now, 1 failed again" in (
        again.output), again


async def test_a_configured_dead_letter_topic_that_does_not_exist_exits_2_saying_so(
    new_service: ServiceFactory,
) -> None:
    service = await new_service("slowish", settings={"dead_letter": {"topic": "no-such-topic-x"}})
    service.start()
    assert await service.wait_exit() == 2
    assert "no-such-topic-x" in service.log()
    assert "does not exist" in service.log()


def test_stack_script_is_where_the_tests_expect_it() -> None:
    result = subprocess.run(["bash", str(STACK_SCRIPT), "status"], capture_output=True, text=True,
                            check=False)
    assert "kafka: up" in result.stdout, result
    assert "elasticsearch: up" in result.stdout, result
