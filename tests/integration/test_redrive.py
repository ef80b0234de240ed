"""`esupdater redrive` tells apart what it applied, what changed nothing, and what it could not
run, against the real stack: Kafka (source and dead-letter topics) and Elasticsearch."""

from __future__ import annotations

import re

from elasticsearch import AsyncElasticsearch

from tests.integration.conftest import TopicFactory
from tests.integration.service_harness import (
    CanalProducer,
    Service,
    ServiceFactory,
    read_records,
    row,
    source,
)


async def dead_lettering(
    new_service: ServiceFactory, dead_letters: str, *, versioned: bool
) -> Service:
    """The `boom` handlers (rows named "boom" fail until the file `fixed` exists), one attempt
    each, then to `dead_letters`."""
    return await new_service("boom", params={"versioned": versioned}, settings={
        "bulk": {"initial_backoff_ms": 20, "max_backoff_ms": 100},
        "dead_letter": {"max_attempts": 1, "topic": dead_letters},
    })


async def test_redrive_of_a_row_whose_handler_is_gone_says_nothing_ran_and_keeps_it(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch,
    new_topic: TopicFactory,
) -> None:
    dead_letters = await new_topic()
    service = await dead_lettering(new_service, dead_letters, versioned=False)
    await canal.rows(service.topic, "users", "INSERT", [row(1, name="boom")])
    await canal.flush()
    await service.started()
    assert (await service.rows_done(1))["dead_lettered"] == 1
    await service.stop()

    # The handler is renamed meanwhile: the dead letter names one that no longer exists.
    service.write_handlers("boom_renamed")
    (service.workdir / "fixed").touch()
    ran = await service.cli("redrive")
    assert ran.returncode == 1, ran
    assert "1 record(s): 0 applied, 0 stale, 1 with no handler now, 0 failed again" in (
        ran.output), ran
    assert re.search(rf"no handler now: {dead_letters}/0@0 \(from {service.topic}/0@0 row 0, "
                     r"handler itest_handlers:sync_user\): nothing ran; dead-lettered anew",
                     ran.output), ran
    assert await source(es, service.index, "1") is None
    # Kept for a later redrive: dead-lettered anew, with the handler it was meant for.
    again = (await read_records(service.bootstrap, dead_letters, 2))[1]
    headers = {name: value.decode() for name, value in again.headers}
    assert headers["esupdater.handler"] == "itest_handlers:sync_user"
    assert headers["esupdater.source_offset"] == "0"
    assert "no handler" in headers["esupdater.reason"]


async def test_redrive_of_a_versioned_row_older_than_the_document_reports_it_stale(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch,
    new_topic: TopicFactory,
) -> None:
    dead_letters = await new_topic()
    service = await dead_lettering(new_service, dead_letters, versioned=True)
    await canal.rows(service.topic, "users", "INSERT", [row(1, name="boom")])
    await canal.rows(service.topic, "users", "UPDATE", [row(1, name="newer")],
                     old=[{"name": "boom"}])
    await canal.flush()
    await service.started()
    assert (await service.rows_done(2))["dead_lettered"] == 1
    await service.stop()
    assert (await source(es, service.index, "1") or {}).get("name") == "newer"

    (service.workdir / "fixed").touch()
    ran = await service.cli("redrive")
    assert ran.returncode == 0, ran  # nothing is lost: the document already holds a newer row
    assert "1 record(s): 0 applied, 1 stale, 0 with no handler now, 0 failed again" in (
        ran.output), ran
    assert f"stale: {dead_letters}/0@0 (from {service.topic}/0@0 row 0" in ran.output, ran
    assert (await source(es, service.index, "1") or {}).get("name") == "newer"


async def test_redrive_help_warns_that_unversioned_writes_replace_newer_documents(
    new_service: ServiceFactory,
) -> None:
    service = await new_service("boom", params={"versioned": True})
    ran = await service.cli("redrive", "--help")
    assert ran.returncode == 0, ran
    assert "unversioned writes" in ran.output, ran
    assert "newer" in ran.output, ran
