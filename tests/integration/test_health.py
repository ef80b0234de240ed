"""Health tied to progress, against the real stack: /healthz, /readyz, `esupdater status`,
and how far behind the binlog the index is.

A partition blocked by a row its handler cannot apply (`on_failure = "block"`) still has a
connected, assigned, busy process; only its commit point tells: it stands still while the
partition has lag. Within `stall_seconds` of that, /healthz and `status` must say so, and
name the partition; once the fix ships and the row goes through, both are healthy again.
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from esupdater.canal import flat_message
from tests.integration.service_harness import (
    MYSQL_TYPES,
    CanalProducer,
    ServiceFactory,
    eventually,
    row,
)

STALL_SECONDS = 4.0
#: The binlog time of the rows sent before the poison: this long ago.
BEHIND = 100.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of one probe."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on /metrics by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def test_a_blocked_partition_turns_healthz_and_status_unhealthy_within_stall_seconds(
    new_service: ServiceFactory, canal: CanalProducer,
) -> None:
    port = free_port()
    service = await new_service("boom", partitions=2, settings={
        "metrics": {"port": port, "stall_seconds": STALL_SECONDS},
        "runtime": {"stats_interval_seconds": 0.5},
        "dead_letter": {"on_failure": "block", "max_attempts": 1},
        "bulk": {"max_backoff_ms": 1000},
        "log": {"progress_interval_seconds": 1},
    })
    await service.started()

    async def answering(path: str, status: int) -> tuple[int, dict[str, Any]] | None:
        answer = await asyncio.to_thread(probe, port, path)
        return answer if answer[0] == status else None

    ready = await eventually(lambda: answering("/readyz", 200), timeout=30,
                             what="/readyz 200", service=service)
    assert ready[1] == {"status": "ok", "reasons": []}
    assert (await asyncio.to_thread(probe, port, "/healthz"))[0] == 200

    then = int((time.time() - BEHIND) * 1000)

    async def send(partition: int, *rows: dict[str, str | None]) -> None:
        for one in rows:
            value = flat_message("shop", "users", "INSERT", [one], mysql_types=MYSQL_TYPES,
                                 es_ms=then)
            await canal.send_and_wait(service.topic, value, partition=partition)

    await send(0, row(1), row(2), row(3))
    await send(1, row(10), row(11), row(12))
    orders = flat_message("shop", "orders", "INSERT", [row(90)], mysql_types=MYSQL_TYPES)
    await canal.send_and_wait(service.topic, orders, partition=1)  # no handler: skipped
    await service.rows_done(6)
    metrics = await asyncio.to_thread(scrape, port)
    assert metrics[("esupdater_table_rows_total",
                    (("outcome", "handled"), ("table", "shop.users"), ("type", "INSERT")))] == 6
    assert metrics[("esupdater_table_rows_total",
                    (("outcome", "skipped"), ("table", "shop.orders"), ("type", "INSERT")))] == 1
    # Six rows, each applied about BEHIND seconds after its binlog time.
    assert metrics[("esupdater_binlog_to_applied_seconds_count", ())] == 6
    assert metrics[("esupdater_binlog_to_applied_seconds_sum", ())] >= 6 * (BEHIND - 5)
    assert metrics[("esupdater_bulk_request_actions_count", ())] >= 1
    assert metrics[("esupdater_bulk_request_actions_sum", ())] == 6
    # Each bulk body: 6 actions of two NDJSON lines each, some tens of bytes a line.
    assert metrics[("esupdater_bulk_request_bytes_count", ())] >= 1
    assert 6 * 2 * 20 <= metrics[("esupdater_bulk_request_bytes_sum", ())] <= 6 * 2 * 400
    # Kafka append -> acknowledgement, once per record: sent just now, so short.
    assert metrics[("esupdater_kafka_to_ack_seconds_count", ())] == 6
    assert 0 < metrics[("esupdater_kafka_to_ack_seconds_sum", ())] < 6 * 30
    await send(0, row(4, name="boom"), row(5))
    blocked_at = time.monotonic()

    stalled = await eventually(lambda: answering("/healthz", 503),
                               timeout=STALL_SECONDS + 10, what="/healthz 503",
                               service=service)
    took = time.monotonic() - blocked_at
    assert took <= STALL_SECONDS + 3, f"a stall reported {took:.1f} s after it began"
    (reason,) = stalled[1]["reasons"]
    assert reason.startswith(f"partition {service.topic}/0 has lag and no commit for "), reason
    status = await service.cli("status")
    assert status.returncode == 3, status
    assert f"STALLED: partition {service.topic}/0 has lag" in status.output, status
    stats = service.stats()
    assert stats is not None
    behind = stats["seconds_behind"]
    assert behind[f"{service.topic}/1"] == 0.0, behind  # caught up
    assert BEHIND - 5 <= behind[f"{service.topic}/0"] <= BEHIND + 60, behind
    assert list(stats["stalled_seconds"]) == [f"{service.topic}/0"], stats
    # Still ready: assigned, Kafka and Elasticsearch answer. Only progress is missing.
    assert (await asyncio.to_thread(probe, port, "/readyz"))[0] == 200
    assert "STALLED" in service.log(), "the progress line names the stalled partition"

    (service.workdir / "fixed").touch()  # the fix ships: the held row goes through
    await eventually(lambda: answering("/healthz", 200), timeout=30, what="/healthz 200 again",
                     service=service)
    assert (await service.cli("status")).returncode == 0
