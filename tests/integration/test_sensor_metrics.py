"""The sensor hook in the running service: `/metrics` serves how long handlers and bulk
requests took (the histograms Stats declares, fed by metrics.StatsSensor)."""

from __future__ import annotations

import asyncio

from elasticsearch import AsyncElasticsearch

from tests.integration.service_harness import (
    HANDLERS_PACKAGE,
    CanalProducer,
    ServiceFactory,
    eventually,
    row,
)
from tests.integration.test_observability import _free_port, _scrape

ROWS = 30
#: users_plain's handler, as routing.handler_name names it.
ROUTE = f"route={HANDLERS_PACKAGE}:sync_user"


async def test_metrics_serve_how_long_each_handler_run_and_bulk_request_took(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    port = _free_port()
    service = await new_service("users_plain", settings={"metrics": {"port": port}})
    for i in range(ROWS):
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    await canal.flush()
    await service.started()
    await service.rows_done(ROWS)

    async def observed() -> dict[str, float] | None:
        samples = await asyncio.to_thread(_scrape, port)
        runs = samples.get(f"esupdater_handler_duration_seconds_count{{{ROUTE}}}")
        requests = samples.get("esupdater_bulk_request_duration_seconds_count")
        settled = requests == samples.get("esupdater_bulk_requests_total")
        return samples if runs == ROWS and settled else None

    samples = await eventually(observed, timeout=30, what="durations observed", service=service)
    assert samples[f"esupdater_handler_duration_seconds_sum{{{ROUTE}}}"] > 0
    assert samples[f"esupdater_handler_duration_seconds_bucket{{le=+Inf,{ROUTE}}}"] == ROWS
    assert 1 <= samples["esupdater_bulk_request_duration_seconds_count"] <= ROWS
    assert samples["esupdater_bulk_request_duration_seconds_sum"] > 0
