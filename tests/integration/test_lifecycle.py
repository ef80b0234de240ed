"""The process lifecycle a user drives: run, stop, signals, status, check, the pidfile lock."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import pytest
from elasticsearch import AsyncElasticsearch

from tests.integration.conftest import TopicFactory
from tests.integration.service_harness import (
    HANDLERS_PACKAGE,
    START_TIMEOUT,
    CanalProducer,
    ServiceFactory,
    eventually,
    row,
    squash,
    wait_count,
)


async def test_run_writes_its_pid_to_the_pidfile_and_start_to_the_status_file(
    new_service: ServiceFactory,
) -> None:
    service = await (await new_service("users_upserted")).started()

    assert service.pidfile_pid() == service.proc.pid  # type: ignore[union-attr]
    assert service.status_word() == "start"


async def test_a_second_run_on_the_same_runtime_dir_exits_nonzero_saying_already_running(
    new_service: ServiceFactory,
) -> None:
    service = await (await new_service("users_upserted")).started()

    second = await service.cli("run", timeout=30)

    assert second.returncode != 0, second
    assert "already running" in second.output, second
    assert str(service.proc.pid) in second.output, second  # type: ignore[union-attr]
    assert not service.exited
    assert service.pidfile_pid() == service.proc.pid  # type: ignore[union-attr]


async def test_a_stale_pidfile_of_a_dead_pid_is_replaced_and_run_starts(
    new_service: ServiceFactory,
) -> None:
    service = await new_service("users_upserted")
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    service.runtime.mkdir()
    service.pidfile.write_text(f"{dead.pid}\n")  # no process holds its lock

    await service.started()

    assert service.pidfile_pid() == service.proc.pid  # type: ignore[union-attr]
    assert "stale pidfile" in service.log_since_start()


async def test_stop_waits_for_the_drain_prints_stopped_exits_0_and_the_pidfile_is_gone(
    new_service: ServiceFactory,
) -> None:
    service = await (await new_service("users_upserted")).started()

    stopped = await service.stop()

    assert stopped.returncode == 0, stopped
    assert "stopped" in stopped.stdout, stopped
    assert service.returncode == 0  # `stop` returned only once the process had gone
    assert not service.pidfile.exists()


async def test_stop_with_nothing_running_exits_1_saying_not_running(
    new_service: ServiceFactory,
) -> None:
    service = await new_service("users_upserted")

    stopped = await service.cli("stop")

    assert stopped.returncode == 1, stopped
    assert "not running" in stopped.output, stopped


async def test_stop_after_a_crash_says_not_running(new_service: ServiceFactory) -> None:
    service = await (await new_service("users_upserted")).started()
    service.kill()
    assert service.pidfile.exists()  # SIGKILL leaves it behind, unlocked

    stopped = await service.cli("stop")

    assert stopped.returncode == 1, stopped
    assert "not running" in stopped.output, stopped


async def _exits_cleanly_on(
    sig: signal.Signals, new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await (await new_service("users_upserted")).started()
    for i in range(20):
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    await canal.flush()
    await wait_count(es, service.index, 20, service=service)

    service.send_signal(sig)

    assert await service.wait_exit() == 0, service.log_since_start()
    assert not service.pidfile.exists()
    assert f"{sig.name} received: draining" in service.log_since_start()
    assert await service.lag() == {0: 0}


async def test_sigterm_drains_commits_exits_0_and_removes_the_pidfile(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    await _exits_cleanly_on(signal.SIGTERM, new_service, canal, es)


async def test_sigint_drains_commits_exits_0_and_removes_the_pidfile(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    await _exits_cleanly_on(signal.SIGINT, new_service, canal, es)


async def test_status_shows_running_the_pid_and_the_rows_done(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await (await new_service("users_upserted")).started()
    for i in range(7):
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    await canal.flush()
    await wait_count(es, service.index, 7, service=service)

    async def reported() -> bool:
        return (service.stats() or {}).get("rows_done") == 7

    await eventually(reported, timeout=10, what="stats file rows_done == 7", service=service)
    status = await service.cli("status")

    assert status.returncode == 0, status
    text = squash(status.stdout)
    assert "state running" in text, status
    assert f"pid {service.proc.pid}" in text, status  # type: ignore[union-attr]
    assert re.search(r"rows done 7\b", text), status


async def test_status_with_nothing_running_exits_1_saying_not_running(
    new_service: ServiceFactory,
) -> None:
    service = await new_service("users_upserted")

    status = await service.cli("status")

    assert status.returncode == 1, status
    assert "not running" in status.output, status


async def test_check_prints_the_route_table_and_exits_0(new_service: ServiceFactory) -> None:
    service = await new_service("check_routes")

    checked = await service.cli("check")

    assert checked.returncode == 0, checked
    lines = checked.stdout.splitlines()
    users = next(line for line in lines if "shop.users" in line)
    assert "itest_handlers:sync_user" in users
    assert re.search(r"DELETE, INSERT, UPDATE", users), checked
    orders = next(line for line in lines if "shop.orders_*" in line)
    assert "itest_handlers:new_order" in orders
    assert "INSERT" in orders
    assert "UPDATE" not in orders
    customers = next(line for line in lines if "shop.customers" in line)
    assert "customer_document (mapper)" in customers
    assert "(mapper)" not in users
    # Both handlers await nothing but their ctx writes: stepped by their batch.
    stepped = next(line for line in lines if line.startswith("stepped by their batch"))
    assert "itest_handlers:sync_user" in stepped
    assert "itest_handlers:new_order" in stepped
    assert not any(line.startswith("a task per row") for line in lines), checked


async def test_check_exits_2_naming_the_unknown_key_and_the_file(
    new_service: ServiceFactory,
) -> None:
    service = await new_service("users_upserted", settings={"kafka": {"max_workerz": 8}})

    checked = await service.cli("check")

    assert checked.returncode == 2, checked
    assert "settings.toml: kafka.max_workerz: unknown key" in checked.output, checked


async def test_check_exits_2_naming_the_env_var_of_a_bad_value(
    new_service: ServiceFactory,
) -> None:
    service = await new_service("users_upserted")

    checked = await service.cli("check", env={"ESUPDATER_WORKER__MAX_WORKERS": "zero"})

    assert checked.returncode == 2, checked
    assert "env ESUPDATER_WORKER__MAX_WORKERS: worker.max_workers" in checked.output, checked


async def test_run_with_an_unknown_settings_key_exits_2_before_taking_the_pidfile(
    new_service: ServiceFactory,
) -> None:
    service = await new_service("users_upserted", settings={"runtime": {"drain_timeout": 5}})

    ran = await service.cli("run", timeout=30)

    assert ran.returncode == 2, ran
    assert "runtime.drain_timeout: unknown key" in ran.output, ran
    assert not service.pidfile.exists()


async def test_a_topic_created_after_start_is_consumed_once_it_exists(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch,
    new_topic: TopicFactory,
) -> None:
    service = await new_service("users_upserted", create_topic=False)
    service.start()

    async def waiting() -> bool:
        return "does not exist yet: waiting for it" in service.log_since_start()

    await eventually(waiting, timeout=START_TIMEOUT, what="missing topic reported",
                     service=service)
    await new_topic(name=service.topic)
    await canal.rows(service.topic, "users", "INSERT", [row(1)])
    await canal.flush()

    # "waiting for it" should not mean aiokafka's 5-minute metadata refresh.
    await wait_count(es, service.index, 1, timeout=30, service=service)


async def test_stop_gives_up_after_its_timeout_saying_still_running_and_exits_1(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("stuck")
    await service.started()
    await canal.rows(service.topic, "users", "INSERT", [row(1)])
    await canal.flush()

    async def stuck() -> bool:
        return (service.workdir / "started").exists()

    await eventually(stuck, timeout=30, what="handler running", service=service)

    stopped = await service.cli("stop", "--timeout", "1")

    assert stopped.returncode == 1, stopped
    assert "still running after 1 s" in stopped.output, stopped
    assert not service.exited  # still draining (drain_timeout is 20 s)


async def test_run_with_no_handlers_registered_exits_2_like_check_and_commits_nothing(
    new_service: ServiceFactory, canal: CanalProducer
) -> None:
    service = await new_service("no_handlers")
    for i in range(5):
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    await canal.flush()

    service.start()

    assert await service.wait_exit() == 2, service.log_since_start()
    checked = await service.cli("check")
    assert checked.returncode == 2, checked
    refusal = f"no handlers registered in package {HANDLERS_PACKAGE!r}"
    assert refusal in checked.output, checked
    assert refusal in squash(service.log_since_start())
    assert await service.committed_and_end() == {0: (None, 5)}  # nothing skipped past
    assert not service.pidfile.exists()


async def test_run_refuses_a_pidfile_that_is_a_symlink_with_exit_2_and_leaves_its_target(
    new_service: ServiceFactory,
) -> None:
    service = await new_service("users_upserted")
    victim = service.workdir / "precious.txt"
    victim.write_text("keep me\n")
    service.runtime.mkdir()
    service.pidfile.symlink_to(victim)

    ran = await service.cli("run", timeout=30)
    status = await service.cli("status")

    assert ran.returncode == 2, ran
    assert "runtime/esupdater.pid is a symbolic link" in ran.output, ran  # as configured
    assert status.returncode == 2, status
    assert "is a symbolic link" in status.output, status
    assert victim.read_text() == "keep me\n"


SASL_PLAIN_IN_CLEAR = {
    "ESUPDATER_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "ESUPDATER_KAFKA__SASL_MECHANISM": "PLAIN",
    "ESUPDATER_KAFKA__SASL_USERNAME": "esupdater",
    "ESUPDATER_KAFKA__SASL_PASSWORD": "secret-1",
}
ES_PASSWORD_OVER_HTTP = {
    "ESUPDATER_ELASTICSEARCH__USERNAME": "esupdater",
    "ESUPDATER_ELASTICSEARCH__PASSWORD": "secret-2",
}
ES_API_KEY_OVER_HTTP = {"ESUPDATER_ELASTICSEARCH__API_KEY": "secret-3"}


@pytest.mark.parametrize(("setting", "env"), [
    ("kafka.sasl_mechanism", SASL_PLAIN_IN_CLEAR),
    ("elasticsearch.password", ES_PASSWORD_OVER_HTTP),
    ("elasticsearch.api_key", ES_API_KEY_OVER_HTTP),
])
async def test_check_warns_about_a_credential_sent_in_clear_naming_the_setting(
    new_service: ServiceFactory, setting: str, env: dict[str, str]
) -> None:
    service = await new_service("users_upserted")

    checked = await service.cli("check", env=env)

    assert checked.returncode == 0, checked
    assert re.search(rf"WARNING: {re.escape(setting)}\b[^\n]*in clear", checked.output), checked
    assert "secret-" not in checked.output


async def test_run_logs_a_warning_for_a_credential_sent_in_clear_naming_the_setting(
    new_service: ServiceFactory,
) -> None:
    service = await new_service("users_upserted")

    service.start(env=ES_PASSWORD_OVER_HTTP)
    await service.ready()

    warnings = [line for line in service.log_since_start().splitlines()
                if " WARNING " in line and "in clear" in line]
    assert any("elasticsearch.password" in line for line in warnings), service.log_since_start()
    assert "secret-" not in service.log_since_start()


async def test_check_is_quiet_about_credentials_over_tls(new_service: ServiceFactory) -> None:
    service = await new_service("users_upserted", settings={"elasticsearch": {"hosts": ["https://es:9200"]}})

    checked = await service.cli("check", env={
        **ES_PASSWORD_OVER_HTTP, **SASL_PLAIN_IN_CLEAR,
        "ESUPDATER_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
    })

    assert checked.returncode == 0, checked
    assert "in clear" not in checked.output, checked


async def test_stop_while_kafka_cannot_be_reached_at_start_up_stops_at_once(
    new_service: ServiceFactory,
) -> None:
    """Start-up waits for Kafka (a transient outage); `stop` must end that wait, not time out."""
    service = await new_service("users_upserted", settings={
        "kafka": {"bootstrap_servers": "127.0.0.1:1"},  # nothing listens there
    })
    proc = service.start()

    async def waiting_for_kafka() -> bool:
        return (service.pidfile_pid() == proc.pid
                and "cannot reach Kafka at 127.0.0.1:1" in service.log_since_start())

    await eventually(waiting_for_kafka, timeout=30, what="waiting for Kafka", service=service)
    stopped = await service.cli("stop", "--timeout", "10")

    assert stopped.returncode == 0, (stopped, service.log_since_start()[-3000:])
    assert "stopped" in stopped.stdout, stopped
    assert not service.pidfile.exists()
    # The pidfile goes last but one: the interpreter's own exit may still be under way.
    assert await service.wait_exit(timeout=10) == 0
