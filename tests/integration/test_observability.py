"""What an operator sees: `esupdater status` and Prometheus `/metrics` agree with the work done."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.request

from elasticsearch import AsyncElasticsearch
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.service_harness import (
    CanalProducer,
    ServiceFactory,
    eventually,
    row,
    wait_count,
)

ROWS = 50


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _scrape(port: int) -> dict[str, float]:
    """Every sample of /metrics by name (labels folded into the name for the lag gauge)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def test_metrics_and_status_count_rows_stale_writes_and_lag(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    first = await new_service("users_versioned")
    for i in range(ROWS):
        await canal.rows(first.topic, "users", "INSERT", [row(i)])
    await canal.flush()
    await first.started()
    await wait_count(es, first.index, ROWS, service=first)
    assert (await first.stop()).returncode == 0

    # Another group reads the same records into the same index: a replay, which the
    # versions turn into writes Elasticsearch refuses as stale.
    port = _free_port()
    replay = await (
        await new_service("users_versioned", joining=first, settings={
            "kafka": {"group_id": f"{first.group}-replay"}, "metrics": {"port": port},
        })
    ).started()
    await replay.rows_done(ROWS)

    async def settled() -> dict[str, float] | None:
        samples = await asyncio.to_thread(_scrape, port)
        lag = samples.get(f"esupdater_lag{{partition=0,topic={first.topic}}}")
        stale = samples.get("esupdater_stale_writes_total")
        return samples if (stale, lag) == (ROWS, 0) else None

    samples = await eventually(settled, timeout=30, what="metrics settled", service=replay)
    assert samples["esupdater_rows_done_total"] == ROWS
    assert samples["esupdater_records_total"] == ROWS
    assert samples["esupdater_rejected_total"] == 0
    assert samples["esupdater_dead_lettered_total"] == 0
    assert 1 <= samples["esupdater_bulk_requests_total"] <= ROWS
    assert samples["esupdater_in_flight_rows"] == 0

    status = await replay.cli("status")
    assert status.returncode == 0, status
    assert re.search(rf"rows done\s+{ROWS}\b", status.stdout), status.stdout
    assert re.search(rf"stale writes\s+{ROWS}\b", status.stdout), status.stdout
    assert re.search(r"lag\s+0\b", status.stdout), status.stdout


async def test_a_partition_stuck_on_its_first_record_after_a_restart_shows_its_lag(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    """Block mode holds the partition at row 0; lag is counted from the group's committed
    offset, so it shows even though this process never committed anything there."""
    service = await new_service("stuck_on_row_0", settings={
        "dead_letter": {"max_attempts": 1, "on_failure": "block"},
    })
    for i in range(1, 6):
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    await canal.flush()
    await service.started()
    await wait_count(es, service.index, 5, service=service)
    assert (await service.stop()).returncode == 0
    assert await service.lag() == {0: 0}  # everything so far is committed

    for i in (0, 6, 7):  # row 0 blocks the partition at its first record after the restart
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    await canal.flush()
    await service.started()

    async def lag_reported() -> dict[str, int] | None:
        lag = (service.stats() or {}).get("lag") or {}
        return lag if lag.get(f"{service.topic}/0") == 3 else None

    await eventually(lag_reported, timeout=30, what="lag 3 in the stats", service=service)
    status = await service.cli("status")
    assert re.search(rf"lag\s+3 \({service.topic}/0=3\)", status.stdout), status.stdout
