"""Kafka that does not answer, as an operator reads it: one sentence naming the address.

`run` waits for Kafka (it is a service: Kafka coming back later is the normal case) and says
so in words; `redrive`, a one-shot command, gives up after a bounded wait with one line and
exit 1, no traceback.
"""

from __future__ import annotations

import socket

from tests.integration.service_harness import ServiceFactory, eventually


def closed_port() -> str:
    """An address nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


async def test_run_waiting_for_kafka_says_where_in_words_and_stops_on_request(
    new_service: ServiceFactory,
) -> None:
    address = closed_port()
    service = await new_service("users_plain", create_topic=False,
                                settings={"kafka": {"bootstrap_servers": address}})
    service.start()
    line = f"cannot reach Kafka at {address} (Kafka consumer, no connection); retrying in "
    await eventually(lambda: _logged(service.log(), line), timeout=30,
                     what=f"the line {line!r}", service=service)
    assert "KafkaConnectionError(" not in service.log()
    assert "Unable connect to" not in service.log()
    stopped = await service.cli("stop")
    assert stopped.returncode == 0, stopped


async def _logged(log: str, line: str) -> bool:
    return line in log


async def test_redrive_with_kafka_down_prints_one_line_and_exits_1(
    new_service: ServiceFactory,
) -> None:
    address = closed_port()
    service = await new_service("users_plain", create_topic=False, settings={
        "kafka": {"bootstrap_servers": address}, "dead_letter": {"topic": "dead-letters"}})

    ran = await service.cli("redrive", timeout=60)

    assert ran.returncode == 1, ran
    last = ran.stderr.strip().splitlines()[-1]
    assert last.startswith(f"esupdater: cannot reach Kafka at {address} (no connection; gave "
                           "up after "), ran
    assert "Traceback" not in ran.stderr, ran
