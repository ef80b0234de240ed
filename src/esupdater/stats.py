"""Counters the service keeps and `esupdater status` shows."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Stats:
    """Monotonic counters; `rate()` turns rows_done into rows/s between two snapshots."""

    started_at: float = field(default_factory=time.time)
    records: int = 0
    rows: int = 0
    rows_done: int = 0
    unrouted: int = 0
    skipped_records: int = 0
    decode_errors: int = 0
    handler_errors: int = 0
    handler_retries: int = 0
    rejected: int = 0
    # Failures that escaped the handlers' own retry and set-aside (retried, never dropped).
    job_errors: int = 0
    dead_lettered: int = 0
    dead_letters_truncated: int = 0  # too large for Kafka: sent without their value
    commits: int = 0
    # Copied from the bulk writer by the service's reporter every stats interval.
    bulk_requests: int = 0
    es_retries: int = 0
    es_held: int = 0  # of es_retries: Elasticsearch refusing (401, 403, no index), not busy
    stale_writes: int = 0
    writes_applied: int = 0  # stale writes are acknowledged too, but change nothing
    # Gauges, refreshed by the service's reporter every stats interval.
    lag: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    _last_time: float = field(default_factory=time.monotonic, repr=False)
    _last_rows: int = field(default=0, repr=False)

    def rate(self) -> float:
        """Rows done per second since the previous call."""
        now = time.monotonic()
        elapsed = now - self._last_time
        rows = self.rows_done - self._last_rows
        self._last_time, self._last_rows = now, self.rows_done
        return rows / elapsed if elapsed > 0 else 0.0

    def snapshot(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}
