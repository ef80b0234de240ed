"""Prometheus `/metrics`, derived from the metrics Stats declares (telemetry.py), and the
health probes `/healthz` and `/readyz` on the same port (health.py).

prometheus-client collects in its own thread; Stats is counted by the event loop without
locks. So a scrape never reads Stats itself: it asks the loop for `Stats.snapshot()` and
waits for that copy, which is consistent (taken between two steps of the loop) and shares
no dict the loop goes on changing. A loop too busy to answer in time gets the previous
snapshot served again, with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

from esupdater.change import Change
from esupdater.health import Verdict, liveness, readiness
from esupdater.routing import Route
from esupdater.stats import Stats
from esupdater.telemetry import Kind, Spec, declared, split_labels

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

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
        return self.fresh_snapshot()[0]

    def fresh_snapshot(self) -> tuple[dict[str, Any], bool]:
        """The loop's snapshot, and whether the loop answered (False: the previous one)."""
        if self.loop.is_closed():
            return self._last, False
        if threading.get_ident() == self._loop_thread:  # a scrape from the loop itself
            self._last = self.stats.snapshot()
            return self._last, True
        future: Future[dict[str, Any]] = Future()

        def take() -> None:
            if future.set_running_or_notify_cancel():
                future.set_result(self.stats.snapshot())

        try:
            self.loop.call_soon_threadsafe(take)
            self._last = future.result(SNAPSHOT_TIMEOUT)
        except RuntimeError:  # the loop closed meanwhile: the process is stopping
            return self._last, False
        except TimeoutError:
            future.cancel()
            log.warning("/metrics: the event loop did not answer within %.0fs (blocked?); "
                        "serving the previous snapshot", SNAPSHOT_TIMEOUT)
            return self._last, False
        return self._last, True

    def healthz(self, stall_seconds: float) -> Verdict:
        snapshot, answered = self.fresh_snapshot()
        if not answered:
            return Verdict(False, (f"the event loop did not answer within "
                                   f"{SNAPSHOT_TIMEOUT:g} s",))
        return liveness(snapshot.get("stalled_seconds") or {}, stall_seconds)

    def readyz(self) -> Verdict:
        snapshot, answered = self.fresh_snapshot()
        verdict = readiness(assigned=int(snapshot.get("assigned_partitions") or 0),
                            kafka_up=bool(snapshot.get("kafka_up")),
                            elasticsearch_up=bool(snapshot.get("elasticsearch_up")))
        if not answered:
            return Verdict(False, ("the event loop did not answer", *verdict.reasons))
        return verdict


#: The sensor's outcomes as the table_rows counter names them.
_OUTCOMES = {"done": "handled", "failed": "retried", "cancelled": "cancelled"}


class FreshnessSensor:
    """Keeps, per partition, the binlog time of the newest row a handler finished
    (`Stats.applied_until`): how far behind the binlog the index is."""

    __slots__ = ("_newest", "stats")

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        # The newest binlog time seen per (topic, partition): most rows are not newer (a
        # transaction's rows share one), and those cost a comparison, no key or float.
        self._newest: dict[tuple[str, int], datetime] = {}

    def handler_done(self, route: Route, change: Change, seconds: float, outcome: str) -> None:
        if outcome == "done":
            self._applied(change)

    def rows_done(self, done: Sequence[tuple[Route, Change]], seconds: float) -> None:
        # One partition's rows: only the newest binlog time among them can move its mark.
        newest: Change | None = None
        newest_when: datetime | None = None
        for _, change in done:
            when = change.executed_at
            if when is not None and (newest_when is None or when > newest_when):
                newest, newest_when = change, when
        if newest is not None:
            self._applied(newest)

    def _applied(self, change: Change) -> None:
        """A row is done: its binlog time is the partition's mark if it is the newest."""
        when = change.executed_at
        if when is None:
            return
        position = change.position
        where = (position.topic, position.partition)
        newest = self._newest.get(where)
        if newest is None or when > newest:
            self._newest[where] = when
            key = f"{position.topic}/{position.partition}"
            at = when.timestamp()
            if at > self.stats.applied_until.get(key, 0.0):
                self.stats.applied_until[key] = at

    def bulk_request_done(self, actions: int, seconds: float, ok: bool) -> None:
        pass


class StatsSensor(FreshnessSensor):
    """Also feeds the histograms Stats declares from handler runs and bulk requests."""

    __slots__ = ()

    def handler_done(self, route: Route, change: Change, seconds: float, outcome: str) -> None:
        super().handler_done(route, change, seconds, outcome)
        stats = self.stats
        if outcome != "cancelled":  # a revoked or stopped row's time says nothing
            stats.handler_duration_seconds.observe(route.name, seconds)
        stats.count_table_row(change.database, change.table, change.type,
                              _OUTCOMES.get(outcome, outcome))
        if outcome == "done" and change.executed_at is not None:
            stats.binlog_to_applied_seconds.observe(
                max(0.0, time.time() - change.executed_at.timestamp()))

    def rows_done(self, done: Sequence[tuple[Route, Change]], seconds: float) -> None:
        for route, change in done:  # every row feeds the histograms and the table counts
            self.handler_done(route, change, seconds, "done")

    def bulk_request_done(self, actions: int, seconds: float, ok: bool) -> None:
        self.stats.bulk_request_duration_seconds.observe(seconds)
        self.stats.bulk_request_actions.observe(actions)


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a probe left hanging never holds the process at exit


class _IPv6ThreadingServer(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a probe every few seconds is not news


def health_app(
    collector: StatsCollector, registry: CollectorRegistry, stall_seconds: float
) -> WSGIApplication:
    """/healthz and /readyz answer 200 or 503 with their reasons as JSON; everything else
    is prometheus-client's /metrics."""
    metrics = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path not in ("/healthz", "/readyz"):
            answer: Iterable[bytes] = metrics(environ, start_response)
            return answer
        verdict = collector.healthz(stall_seconds) if path == "/healthz" else collector.readyz()
        body = orjson.dumps(verdict.body())
        start_response("200 OK" if verdict.ok else "503 Service Unavailable",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(body)))])
        return [body]

    return app


def serve_metrics(host: str, port: int, stats: Stats, stall_seconds: float = 120.0) -> None:
    """Start /metrics, /healthz and /readyz in a thread of their own, and the sensor that
    feeds the histograms. Called on the event loop."""
    stats.sensor = StatsSensor(stats)
    registry = CollectorRegistry()
    collector = StatsCollector(stats, asyncio.get_running_loop())
    registry.register(collector)
    server_class = _IPv6ThreadingServer if ":" in host else _ThreadingServer
    server = make_server(host, port, health_app(collector, registry, stall_seconds),
                         server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="esupdater-http", daemon=True).start()
