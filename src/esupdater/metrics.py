"""Prometheus metrics, read from the live counters at scrape time (no hot-path cost)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import CollectorRegistry

from esupdater.stats import Stats

#: Stats counters exported as `esupdater_<name>_total`, with their help text.
COUNTERS = {
    "records": "Kafka records fetched",
    "rows": "Row changes dispatched to handlers",
    "rows_done": "Row changes finished: their writes acknowledged (applied or stale) or set aside",
    "unrouted": "Row changes with no matching handler",
    "decode_errors": "Records that are not Canal messages",
    "handler_errors": "Rows whose handler kept failing",
    "handler_retries": "Handler retries after an error",
    "rejected": "Actions Elasticsearch refused for good",
    "job_errors": "Failures that escaped the handlers' own failure handling (retried, a bug)",
    "dead_lettered": "Records or rows set aside",
    "dead_letters_truncated": "Dead letters too large for Kafka, sent without their value",
    "commits": "Offset commits",
    "bulk_requests": "Bulk requests sent to Elasticsearch",
    "es_retries": "Bulk items retried after a transient or held Elasticsearch failure",
    "es_held": "Of es_retries: items Elasticsearch refused for a reason outside the document",
    "writes_applied": "Writes Elasticsearch applied (stale ones are counted apart)",
    "stale_writes": "Versioned writes not applied: the document already held a newer change",
}


class _Collector:
    """Reads the counters and the gauges the event loop refreshes every stats interval;
    it runs in prometheus-client's thread, so it touches nothing the loop mutates in place."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        snapshot: dict[str, Any] = self.stats.snapshot()
        for name, help_text in COUNTERS.items():
            yield CounterMetricFamily(f"esupdater_{name}", help_text, value=snapshot[name])
        lag = GaugeMetricFamily("esupdater_lag", "Records not yet committed",
                                labels=["topic", "partition"])
        for where, value in dict(self.stats.lag).items():
            topic, partition = where.rsplit("/", 1)
            lag.add_metric([topic, partition], value)
        yield lag
        yield GaugeMetricFamily("esupdater_in_flight_rows", "Rows admitted, not done",
                                value=self.stats.in_flight)


def serve_metrics(host: str, port: int, stats: Stats) -> None:
    """Start the /metrics endpoint in prometheus-client's own thread."""
    registry = CollectorRegistry()
    registry.register(_Collector(stats))
    start_http_server(port, addr=host, registry=registry)
