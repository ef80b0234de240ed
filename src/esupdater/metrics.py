"""Prometheus `/metrics`, derived from the metrics Stats declares (telemetry.py).

prometheus-client collects in its own thread; Stats is counted by the event loop without
locks. So a scrape never reads Stats itself: it asks the loop for `Stats.snapshot()` and
waits for that copy, which is consistent (taken between two steps of the loop) and shares
no dict the loop goes on changing. A loop too busy to answer in time gets the previous
snapshot served again, with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import CollectorRegistry

from esupdater.change import Change
from esupdater.routing import Route
from esupdater.stats import Stats
from esupdater.telemetry import Kind, Spec, declared, split_labels

log = logging.getLogger(__name__)

#: Prefix of every name on /metrics.
PREFIX = "esupdater_"
#: Seconds a scrape waits for the event loop's snapshot.
SNAPSHOT_TIMEOUT = 2.0


def families(stats_type: type[Stats], snapshot: Mapping[str, Any]) -> Iterator[Metric]:
    """The metric families of one snapshot, as the declarations of `stats_type` say."""
    for name, spec in declared(stats_type):
        if spec.exported:
            yield _family(f"{PREFIX}{spec.metric or name}", spec, snapshot[name])


def _family(name: str, spec: Spec, value: Any) -> Metric:
    labels = list(spec.labels)
    by_key: Mapping[str, Any] = value if spec.labels else {"": value}
    family: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
    if spec.kind is Kind.HISTOGRAM:
        family = HistogramMetricFamily(name, spec.help, labels=labels)
        for key, histogram in sorted(by_key.items()):
            family.add_metric(
                split_labels(key, spec) if labels else [],
                list(histogram["buckets"].items()), histogram["sum"],
            )
        return family
    if spec.kind is Kind.COUNTER:
        family = CounterMetricFamily(name, spec.help, labels=labels)
    else:
        family = GaugeMetricFamily(name, spec.help, labels=labels)
    for key, number in sorted(by_key.items()):
        family.add_metric(split_labels(key, spec) if labels else [], number)
    return family


class StatsCollector:
    """Serves the snapshot the event loop takes for each scrape; made on the loop's thread."""

    def __init__(self, stats: Stats, loop: asyncio.AbstractEventLoop) -> None:
        self.stats = stats
        self.loop = loop
        self._loop_thread = threading.get_ident()
        self._last = stats.snapshot()  # taken on the loop's thread: consistent

    def collect(self) -> Iterator[Metric]:
        return families(type(self.stats), self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        if self.loop.is_closed():
            return self._last
        if threading.get_ident() == self._loop_thread:  # a scrape from the loop itself
            self._last = self.stats.snapshot()
            return self._last
        future: Future[dict[str, Any]] = Future()

        def take() -> None:
            if future.set_running_or_notify_cancel():
                future.set_result(self.stats.snapshot())

        try:
            self.loop.call_soon_threadsafe(take)
            self._last = future.result(SNAPSHOT_TIMEOUT)
        except RuntimeError:  # the loop closed meanwhile: the process is stopping
            pass
        except TimeoutError:
            future.cancel()
            log.warning("/metrics: the event loop did not answer within %.0fs (blocked?); "
                        "serving the previous snapshot", SNAPSHOT_TIMEOUT)
        return self._last


class StatsSensor:
    """Feeds the histograms Stats declares from the core's handler runs and bulk requests."""

    __slots__ = ("stats",)

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def handler_done(self, route: Route, change: Change, seconds: float, outcome: str) -> None:
        if outcome != "cancelled":  # a revoked or stopped row's time says nothing
            self.stats.handler_duration_seconds.observe(route.name, seconds)

    def bulk_request_done(self, actions: int, seconds: float, ok: bool) -> None:
        self.stats.bulk_request_duration_seconds.observe(seconds)


def serve_metrics(host: str, port: int, stats: Stats) -> None:
    """Start the /metrics endpoint in prometheus-client's own thread, and the sensor that
    feeds its histograms. Called on the event loop."""
    stats.sensor = StatsSensor(stats)
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats, asyncio.get_running_loop()))
    start_http_server(port, addr=host, registry=registry)
