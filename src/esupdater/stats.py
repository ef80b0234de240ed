"""The service's metrics, each declared once (telemetry.py): counted here by the event loop,
served on `/metrics`, written to the stats file and shown by `esupdater status` from these
declarations. To add a metric, add a field here and count into it; nothing else lists it.

Field names are the stats-file keys and, after `esupdater_` (and `_total` for counters),
the `/metrics` names: operators and tests rely on them, so a rename keeps the old name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from esupdater.telemetry import (
    Histogram,
    Histograms,
    NullSensor,
    Sensor,
    counter,
    declared,
    gauge,
    histogram,
    read,
)

#: Bytes of one bulk request: 1 KiB to bulk.max_chunk_bytes' default (10 MiB) and beyond.
BYTE_BUCKETS = (1024, 16384, 65536, 262144, 1048576, 4194304, 10485760, 52428800)
#: Actions in one bulk request.
ACTION_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
#: Seconds behind the binlog: Canal's second-resolution time makes the first bucket 1 s.
FRESHNESS_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: Seconds: from a quick handler's upsert to a minute of retries.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0)


@dataclass
class Stats:
    """Counters, gauges and histograms; `rate()` turns rows_done into rows/s.

    The fields with a `status` label are shown by `esupdater status` in this order, after
    uptime, group and rows/s.
    """

    started_at: float = field(default_factory=time.time)
    rows_done: int = counter(
        "Row changes finished: their writes acknowledged (applied or stale) or set aside",
        status="rows done")
    # Gauges, sampled by the service's reporter every stats interval.
    in_flight: int = gauge("Rows admitted, not done", status="in flight",
                           metric="in_flight_rows")
    lag: dict[str, int] = gauge("Records not yet committed", labels=("topic", "partition"),
                                status="lag")
    seconds_behind: dict[str, float] = gauge(
        "Seconds from the binlog time of the last row applied to now, per partition with lag "
        "(0 when caught up)", labels=("topic", "partition"), status="seconds behind")
    assigned_partitions: int = gauge("Partitions assigned to this process", status="partitions")
    stalled_seconds: dict[str, float] = gauge(
        "Seconds a partition with lag has gone without a commit, for those past "
        "metrics.stall_seconds (stalled: /healthz says 503)", labels=("topic", "partition"),
        status="stalled")
    kafka_up: int = gauge("1 when Kafka answered the last probe, else 0", metric="kafka_up")
    elasticsearch_up: int = gauge("1 when Elasticsearch answered the last probe, else 0",
                                  metric="elasticsearch_up")
    decode_errors: int = counter("Records that are not Canal messages", status="decode errors")
    handler_errors: int = counter("Rows whose handler kept failing", status="handler errors")
    # Failures that escaped the handlers' own retry and set-aside (retried, never dropped).
    job_errors: int = counter(
        "Failures that escaped the handlers' own failure handling (retried, a bug)",
        status="job errors")
    rejected: int = counter("Actions Elasticsearch refused for good", status="rejected")
    dead_lettered: int = counter("Records or rows set aside", status="dead lettered")
    dead_letters_truncated: int = counter(
        "Dead letters too large for Kafka, sent without their value",
        status="dead letters truncated")
    unrouted: int = counter("Row changes with no matching handler", status="unrouted")
    # Counted by the bulk writer.
    es_retries: int = counter(
        "Bulk items retried after a transient or held Elasticsearch failure",
        status="es retries")
    es_held: int = counter(
        "Of es_retries: items Elasticsearch refused for a reason outside the document",
        status="es held")
    writes_applied: int = counter(
        "Writes Elasticsearch applied (stale ones are counted apart)", status="writes applied")
    stale_writes: int = counter(
        "Versioned writes not applied: the document already held a newer change",
        status="stale writes")
    bulk_requests: int = counter("Bulk requests sent to Elasticsearch")
    records: int = counter("Kafka records fetched")
    rows: int = counter("Row changes dispatched to handlers")
    skipped_records: int = counter("Records none of whose rows had a handler", exported=False)
    handler_retries: int = counter("Handler retries after an error")
    commits: int = counter("Offset commits")
    # Fed by metrics.StatsSensor while /metrics is served (empty otherwise).
    handler_duration_seconds: Histograms = histogram(
        "Seconds one route's handler took for one row, retries included",
        buckets=DURATION_BUCKETS, labels=("route",))
    bulk_request_duration_seconds: Histogram = histogram(
        "Seconds from handing a batch to the bulk helper to its last item's answer",
        buckets=DURATION_BUCKETS)
    bulk_request_actions: Histogram = histogram(
        "Actions per bulk request batch", buckets=ACTION_BUCKETS)
    bulk_request_bytes: Histogram = histogram(
        "Bytes of one bulk request body", buckets=BYTE_BUCKETS)
    kafka_to_ack_seconds: Histogram = histogram(
        "Seconds from a record's Kafka timestamp (its append, or its producer's send) to "
        "Elasticsearch's acknowledgement of its last row", buckets=DURATION_BUCKETS)
    binlog_to_applied_seconds: Histogram = histogram(
        "Seconds from a row's binlog time (its MySQL commit) to its handler finishing with it: "
        "Canal, Kafka and esupdater together", buckets=FRESHNESS_BUCKETS)
    table_rows: dict[str, int] = counter(
        "Row changes by table, type and outcome: skipped (no handler), and while /metrics is "
        "served handled (applied or set aside), retried (an attempt failed and runs again), "
        "cancelled (partition revoked or stopping)", labels=("table", "type", "outcome"))
    #: Observes handler runs and bulk requests (telemetry.Sensor); by default nothing.
    sensor: Sensor = field(default_factory=NullSensor, repr=False, compare=False)
    #: Per partition ("topic/partition"): the binlog time (epoch seconds) of the newest row
    #: a handler finished; the service turns it into seconds_behind.
    applied_until: dict[str, float] = field(default_factory=dict, repr=False, compare=False)
    _table_keys: dict[tuple[str, str, str, str], str] = field(
        default_factory=dict, repr=False, compare=False)
    _last_time: float = field(default_factory=time.monotonic, repr=False)
    _last_rows: int = field(default=0, repr=False)

    def count_table_row(self, database: str, table: str, type: str, outcome: str) -> None:
        """One row change of `database.table` into table_rows (its label built once)."""
        labels = (database, table, type, outcome)
        key = self._table_keys.get(labels)
        if key is None:
            key = self._table_keys[labels] = f"{database}.{table}/{type}/{outcome}"
        self.table_rows[key] = self.table_rows.get(key, 0) + 1

    def rate(self) -> float:
        """Rows done per second since the previous call."""
        now = time.monotonic()
        elapsed = now - self._last_time
        rows = self.rows_done - self._last_rows
        self._last_time, self._last_rows = now, self.rows_done
        return rows / elapsed if elapsed > 0 else 0.0

    def snapshot(self) -> dict[str, Any]:
        """Every declared metric's value, and started_at: one consistent copy when taken on
        the event loop (the only writer), safe to hand to another thread."""
        values: dict[str, Any] = {"started_at": self.started_at}
        for name, spec in declared(type(self)):
            values[name] = read(spec, getattr(self, name))
        return values
