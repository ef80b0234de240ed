"""Metric declarations and the sensor hook.

A metric is declared once, as a field of `esupdater.stats.Stats`:

    stale_writes: int = counter("Versioned writes not applied: ...", status="stale writes")

The field's name is the attribute the code counts into and the stats-file key; `counter`,
`gauge` and `histogram` record its kind, help text, labels and `esupdater status` label.
`/metrics` (metrics.py), the stats file (`Stats.snapshot`) and `esupdater status`
(cli.py) are all derived from these declarations, so a new metric is one line in Stats plus
the code that counts it.

A labelled metric holds a dict keyed by its label values joined with "/" (only the first
label's values may contain "/"); a histogram holds a `Histogram`, a labelled one a
`Histograms`. Everything here is mutated by the event loop only: readers in other threads
take `Stats.snapshot()` in the loop (metrics.py does).

The sensor hook: the core calls a `Sensor` around every handler run and bulk request
without knowing what it does with them; the default does nothing. It is where durations
and sizes come in for histograms (metrics.py's `StatsSensor` feeds the declared ones).
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from esupdater.change import Change
from esupdater.routing import Route

#: The dataclass field metadata key under which a metric's `Spec` is kept.
SPEC = "esupdater.metric"
#: Between the label values of a labelled metric's keys.
LABEL_SEPARATOR = "/"


class Kind(Enum):
    COUNTER = "counter"  # only goes up; `/metrics` adds `_total` to its name
    GAUGE = "gauge"  # a value sampled now (lag, rows in flight)
    HISTOGRAM = "histogram"  # observations counted in buckets, with their sum


@dataclass(frozen=True, slots=True)
class Spec:
    """How one metric is named and shown; its value lives in the Stats field."""

    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    #: Row label in `esupdater status`; None: not shown there.
    status: str | None = None
    #: Name on `/metrics` after `esupdater_` (None: the field's name).
    metric: str | None = None
    #: False: kept in the stats file only, not served on `/metrics`.
    exported: bool = True


def counter(help: str, *, labels: Sequence[str] = (), status: str | None = None,
            exported: bool = True) -> Any:
    """A Stats field counting up from 0 (a dict of counts when labelled)."""
    spec = Spec(Kind.COUNTER, help, tuple(labels), status, None, exported)
    return _field(spec, dict if labels else None)


def gauge(help: str, *, labels: Sequence[str] = (), status: str | None = None,
          metric: str | None = None) -> Any:
    """A Stats field holding a sampled value (a dict of values when labelled)."""
    return _field(Spec(Kind.GAUGE, help, tuple(labels), status, metric), dict if labels else None)


def histogram(help: str, *, buckets: Sequence[float], labels: Sequence[str] = ()) -> Any:
    """A Stats field of observations in buckets (upper bounds, `+Inf` added); on `/metrics`
    and in the stats file, not in `esupdater status`."""
    bounds = tuple(sorted(buckets))
    spec = Spec(Kind.HISTOGRAM, help, tuple(labels))
    return _field(spec, (lambda: Histograms(bounds)) if labels else (lambda: Histogram(bounds)))


def _field(spec: Spec, factory: Callable[[], Any] | None) -> Any:
    if factory is None:
        return field(default=0, metadata={SPEC: spec})
    return field(default_factory=factory, metadata={SPEC: spec})


_declared: dict[type, tuple[tuple[str, Spec], ...]] = {}


def declared(cls: type) -> tuple[tuple[str, Spec], ...]:
    """The metrics a Stats dataclass declares, as (field name, spec), in declaration order."""
    found = _declared.get(cls)
    if found is None:
        found = _declared[cls] = tuple(
            (f.name, f.metadata[SPEC]) for f in dataclasses.fields(cls) if SPEC in f.metadata
        )
    return found


def split_labels(key: str, spec: Spec) -> list[str]:
    """A labelled metric's key back into its label values."""
    return key.rsplit(LABEL_SEPARATOR, len(spec.labels) - 1)


class Histogram:
    """Counts per bucket and the sum: what Prometheus' histogram type needs."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> dict[str, Any]:
        """Cumulative counts by upper bound ("le", as Prometheus has them), count and sum."""
        buckets: dict[str, int] = {}
        total = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            buckets["+Inf" if bound == math.inf else repr(float(bound))] = total
        return {"buckets": buckets, "count": total, "sum": self.sum}


class Histograms(dict[str, Histogram]):
    """A labelled histogram: one `Histogram` per key, made on its first observation."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        super().__init__()
        self.bounds = bounds

    def observe(self, key: str, value: float) -> None:
        found = self.get(key)
        if found is None:
            found = self[key] = Histogram(self.bounds)
        found.observe(value)


def read(spec: Spec, value: Any) -> Any:
    """A copy of a metric's value that later counting does not change (for a snapshot)."""
    if spec.kind is Kind.HISTOGRAM:
        if spec.labels:
            return {key: h.snapshot() for key, h in value.items()}
        return value.snapshot()
    return dict(value) if spec.labels else value


class Sensor(Protocol):
    """Observes what the core does; called on the event loop, so it must be quick and must
    not raise (a failure in it is a bug in the sensor, not in the row)."""

    def handler_done(self, route: Route, change: Change, seconds: float, outcome: str) -> None:
        """One route's handler finished with a row: `outcome` is "done" (applied or set
        aside), "cancelled" (revocation or stop) or "failed" (escaped, will be retried).
        `route.name` is built on each call: a sensor that needs it pays for it."""

    def rows_done(self, done: Sequence[tuple[Route, Change]], seconds: float) -> None:
        """Rows of one partition done together (a fetch's batch), each by its one route,
        `seconds` after the batch began: what `handler_done(route, change, seconds, "done")`
        says for each, in one call, so that a sensor that needs less than every row (the
        freshness sensor, only the newest) does not pay a call per row."""

    def bulk_request_done(self, actions: int, seconds: float, ok: bool) -> None:
        """A batch of `actions` actions handed to the bulk helper has its last answer (`ok`),
        or failed as a whole; one request, or several if it exceeded `max_chunk_bytes`."""


class NullSensor:
    """The default sensor: observes nothing."""

    __slots__ = ()

    def handler_done(self, route: Route, change: Change, seconds: float, outcome: str) -> None:
        pass

    def rows_done(self, done: Sequence[tuple[Route, Change]], seconds: float) -> None:
        pass

    def bulk_request_done(self, actions: int, seconds: float, ok: bool) -> None:
        pass
