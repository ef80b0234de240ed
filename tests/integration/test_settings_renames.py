"""Renamed settings keys through the real `esupdater`: old names still run, and say so."""

from __future__ import annotations

from elasticsearch import AsyncElasticsearch

from tests.integration.service_harness import (
    CanalProducer,
    ServiceFactory,
    source,
    squash,
    wait_count,
)

OLD_NAMES = {"worker": {"max_workers": 2, "tinyint1_as_bool": True}, "bulk": {"max_in_flight": 1}}


async def test_check_accepts_old_key_names_and_warns_naming_old_and_new(
    new_service: ServiceFactory,
) -> None:
    service = await new_service("users_upserted", settings=OLD_NAMES)

    checked = await service.cli("check", env={"ESUPDATER_BULK__MAX_IN_FLIGHT": "3"})

    assert checked.returncode == 0, checked
    for old, new in [("worker.max_workers", "dispatch.max_rows_in_flight"),
                     ("worker.tinyint1_as_bool", "source.tinyint1_as_bool")]:
        assert f"WARNING: settings.toml: {old} is deprecated, renamed {new}" in checked.output
    assert ("WARNING: env ESUPDATER_BULK__MAX_IN_FLIGHT: bulk.max_in_flight is deprecated, "
            "renamed bulk.max_requests_in_flight; set ESUPDATER_BULK__MAX_REQUESTS_IN_FLIGHT "
            "instead") in checked.output, checked


async def test_check_refuses_an_old_and_a_new_name_for_one_setting(
    new_service: ServiceFactory,
) -> None:
    service = await new_service("users_upserted", settings={
        "worker": {"max_workers": 2}, "dispatch": {"max_rows_in_flight": 3}})

    checked = await service.cli("check")

    assert checked.returncode == 2, checked
    assert ("settings.toml: worker.max_workers and dispatch.max_rows_in_flight are one "
            "setting") in checked.output, checked


async def test_run_with_old_key_names_applies_them_and_logs_the_deprecation(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    """`worker.tinyint1_as_bool` still reaches the decoder: the document holds a boolean."""
    service = await new_service("canal_mirror", params={"table": "flags", "one_partition": True},
                                settings=OLD_NAMES)
    await service.started()

    await canal.rows(service.topic, "flags", "INSERT", [{"id": "1", "on": "1"}],
                     mysql_types={"id": "int(11)", "on": "tinyint(1)"})
    await canal.flush()
    await wait_count(es, service.index, 1, service=service)

    assert await source(es, service.index, "1") == {"id": 1, "on": True}
    log = squash(service.log_since_start())
    assert ("WARNING" in log and "settings.toml: worker.tinyint1_as_bool is deprecated, "
            "renamed source.tinyint1_as_bool") in log, log
