"""`/metrics` derived from the declarations in Stats, read from one snapshot the loop takes.

The endpoint itself against a running service is in tests/integration/test_observability.py
and test_sensor_metrics.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from esupdater import metrics
from esupdater.change import Change
from esupdater.context import Context
from esupdater.metrics import FreshnessSensor, StatsCollector, StatsSensor
from esupdater.routing import Registry
from esupdater.stats import Stats
from esupdater.telemetry import Histograms, Kind, counter, declared, histogram
from esupdater.testing import make_change

#: The names on /metrics that dashboards and the README rely on (never renamed).
PUBLIC_NAMES = {
    "esupdater_records_total", "esupdater_rows_total", "esupdater_rows_done_total",
    "esupdater_unrouted_total", "esupdater_decode_errors_total",
    "esupdater_handler_errors_total", "esupdater_handler_retries_total",
    "esupdater_rejected_total", "esupdater_job_errors_total", "esupdater_dead_lettered_total",
    "esupdater_dead_letters_truncated_total", "esupdater_commits_total",
    "esupdater_bulk_requests_total", "esupdater_es_retries_total", "esupdater_es_held_total",
    "esupdater_writes_applied_total", "esupdater_stale_writes_total", "esupdater_in_flight_rows",
}
#: The keys of runtime/esupdater.stats.json that `status`, tests and users read.
STATS_FILE_KEYS = {
    "started_at", "records", "rows", "rows_done", "unrouted", "skipped_records",
    "decode_errors", "handler_errors", "handler_retries", "rejected", "job_errors",
    "dead_lettered", "dead_letters_truncated", "commits", "bulk_requests", "es_retries",
    "es_held", "stale_writes", "writes_applied", "lag", "in_flight",
}


def samples(registry: CollectorRegistry) -> dict[str, float]:
    """Every sample of one scrape, by name with its labels."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def registry_of(stats: Stats) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats, asyncio.get_running_loop()))
    return registry


async def test_the_names_operators_rely_on_stay_on_metrics_and_in_the_stats_file() -> None:
    stats = Stats()
    stats.lag = {"shop/0": 4}

    scraped = await asyncio.to_thread(samples, registry_of(stats))

    assert scraped.keys() >= PUBLIC_NAMES
    assert scraped["esupdater_lag{partition=0,topic=shop}"] == 4
    assert stats.snapshot().keys() >= STATS_FILE_KEYS


async def test_every_declared_metric_is_served_and_written_under_its_declared_name() -> None:
    stats = Stats()
    for value, (name, spec) in enumerate(declared(Stats), start=1):
        if spec.kind is not Kind.HISTOGRAM and not spec.labels:
            setattr(stats, name, value)

    scraped = await asyncio.to_thread(samples, registry_of(stats))
    snapshot = stats.snapshot()

    for value, (name, spec) in enumerate(declared(Stats), start=1):
        if spec.kind is Kind.HISTOGRAM or spec.labels:
            continue
        assert snapshot[name] == value, name
        served = f"esupdater_{spec.metric or name}" + ("_total" if spec.kind is Kind.COUNTER
                                                       else "")
        assert scraped.get(served) == (value if spec.exported else None), served


@dataclass
class WithPerRoute(Stats):
    """Stats with a labelled counter that gains keys as the loop counts (per route, per table)."""

    per_route: dict[str, int] = counter("Rows per route", labels=("route",))


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Threads take turns every 10 us instead of 5 ms: a torn read shows up at once."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.usefixtures("frequent_thread_switches")
async def test_a_scrape_reads_one_snapshot_taken_on_the_loop_while_it_counts() -> None:
    """prometheus-client scrapes in its own thread: it must never iterate a dict the loop is
    adding keys to, nor see one counter moved and its twin not yet."""
    stats = WithPerRoute()

    async def count() -> None:
        while stats.rows < 100_000:
            for _ in range(500):
                stats.rows += 1  # its twin below is counted after a call: a thread switch
                route = f"handlers.r{stats.rows // 100}"  # a new key every 100 rows
                stats.per_route[route] = stats.per_route.get(route, 0) + 1
            await asyncio.sleep(0)

    task = asyncio.create_task(count())
    registry = registry_of(stats)
    scrapes = 0
    while not task.done() or scrapes < 3:
        scraped = await asyncio.to_thread(samples, registry)
        scrapes += 1
        per_route = sum(v for k, v in scraped.items() if k.startswith("esupdater_per_route_total{"))
        assert per_route == scraped["esupdater_rows_total"]
    await task


async def test_a_loop_that_does_not_answer_gets_the_previous_snapshot_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "SNAPSHOT_TIMEOUT", 0.05)
    stats = Stats()
    stats.rows_done = 5
    registry = registry_of(stats)
    assert (await asyncio.to_thread(samples, registry))["esupdater_rows_done_total"] == 5
    stats.rows_done = 6

    scraped: dict[str, float] = {}
    scrape = threading.Thread(target=lambda: scraped.update(samples(registry)))
    scrape.start()
    scrape.join(timeout=5)  # the loop is blocked (a bug elsewhere) for the whole scrape

    assert scraped["esupdater_rows_done_total"] == 5


async def _sync_user(change: Change, ctx: Context) -> None:
    """A handler to route to."""


async def test_the_stats_sensor_feeds_the_handler_and_bulk_request_histograms() -> None:
    stats = Stats()
    sensor = StatsSensor(stats)
    change = make_change("shop", "users", "INSERT", {"id": 1})
    sync_user = Registry().add("shop.users", _sync_user)

    sensor.handler_done(sync_user, change, 0.3, "done")
    sensor.handler_done(sync_user, change, 0.004, "failed")
    sensor.handler_done(sync_user, change, 9.0, "cancelled")  # not a duration
    sensor.bulk_request_done(20, 0.02, True)
    scraped = await asyncio.to_thread(samples, registry_of(stats))

    route = f"route={sync_user.name}"
    assert scraped[f"esupdater_handler_duration_seconds_count{{{route}}}"] == 2
    assert scraped[f"esupdater_handler_duration_seconds_sum{{{route}}}"] == pytest.approx(0.304)
    assert scraped[f"esupdater_handler_duration_seconds_bucket{{le=0.005,{route}}}"] == 1
    assert scraped[f"esupdater_handler_duration_seconds_bucket{{le=0.5,{route}}}"] == 2
    assert scraped[f"esupdater_handler_duration_seconds_bucket{{le=+Inf,{route}}}"] == 2
    assert scraped["esupdater_bulk_request_duration_seconds_bucket{le=0.025}"] == 1
    assert scraped["esupdater_bulk_request_duration_seconds_bucket{le=0.01}"] == 0
    assert stats.snapshot()["bulk_request_duration_seconds"]["count"] == 1


def test_a_batchs_rows_done_at_once_move_the_freshness_mark_as_one_by_one() -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    seconds = (5, 9, None, 7, 9, 2)  # a later row can carry an earlier binlog time
    changes = [
        dataclasses.replace(  # make_change's default binlog time is now: none, for None
            make_change("shop", "users", "INSERT", {"id": i}, partition=3),
            executed_at=None if s is None else base + timedelta(seconds=s))
        for i, s in enumerate(seconds)]
    route = Registry().add("shop.users", _sync_user)
    one_by_one, at_once = Stats(), Stats()
    for change in changes:
        FreshnessSensor(one_by_one).handler_done(route, change, 0.1, "done")
    at_once_sensor = FreshnessSensor(at_once)
    at_once_sensor.rows_done([(route, change) for change in changes[:2]], 0.1)
    at_once_sensor.rows_done([(route, change) for change in changes[2:]], 0.1)
    assert at_once.applied_until == one_by_one.applied_until == {
        "test/3": (base + timedelta(seconds=9)).timestamp()}
    FreshnessSensor(at_once).rows_done([(route, changes[2])], 0.1)  # no binlog time: no mark
    assert at_once.applied_until == one_by_one.applied_until


async def test_the_stats_sensor_counts_each_row_a_batch_reports_at_once() -> None:
    stats = Stats()
    route = Registry().add("shop.users", _sync_user)
    StatsSensor(stats).rows_done(
        [(route, make_change("shop", "users", "INSERT", {"id": i})) for i in range(3)], 0.2)
    scraped = await asyncio.to_thread(samples, registry_of(stats))
    assert scraped[f"esupdater_handler_duration_seconds_count{{route={route.name}}}"] == 3
    assert stats.snapshot()["binlog_to_applied_seconds"]["count"] == 3


@dataclass
class WithSizes(Stats):
    sizes: Histograms = histogram("Sizes", buckets=(10, 100), labels=("index", "op"))


def test_a_labelled_histogram_snapshot_is_a_copy_later_observations_do_not_change() -> None:
    stats = WithSizes()
    stats.sizes.observe("users/index", 50)
    snapshot = stats.snapshot()

    stats.sizes.observe("users/index", 5)
    stats.sizes.observe("orders/delete", 500)

    assert snapshot["sizes"] == {
        "users/index": {"buckets": {"10.0": 0, "100.0": 1, "+Inf": 1}, "count": 1, "sum": 50},
    }
