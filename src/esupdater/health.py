"""Health tied to progress: is every partition that has work moving, and can we work at all?

A process can be up, connected and assigned, and still do nothing useful: a partition held
by a record that cannot be applied, a handler waiting forever, Elasticsearch refusing every
write. Each of those shows the same way, and only that way: the partition has lag and its
commit point does not move. `ProgressWatch` notices it after `stall_seconds`, including a
partition stuck on its first record after a restart (its commit point is the group's).

The verdicts are plain data (`Verdict`), computed on the event loop from the sampled state
and written to the stats file, so `/healthz`, `/readyz` and `esupdater status` all say the
same thing for the same reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PartitionState:
    """One assigned partition as sampled: where its commit point is, and how far behind."""

    commit_point: int | None  # the next offset to commit from (None: nothing known yet)
    lag: int  # records after the commit point


@dataclass
class _Watched:
    commit_point: int | None
    since: float  # when the commit point last moved, or the partition was first seen


@dataclass
class ProgressWatch:
    """Remembers when each partition's commit point last moved."""

    stall_seconds: float
    _watched: dict[str, _Watched] = field(default_factory=dict)

    def observe(self, now: float, partitions: Mapping[str, PartitionState]) -> None:
        """A new sample of the assigned partitions; revoked ones are forgotten."""
        for gone in set(self._watched) - set(partitions):
            del self._watched[gone]
        for name, state in partitions.items():
            seen = self._watched.get(name)
            if seen is None or seen.commit_point != state.commit_point or state.lag == 0:
                self._watched[name] = _Watched(state.commit_point, now)

    def stalled(self, now: float, partitions: Mapping[str, PartitionState]) -> dict[str, float]:
        """Partitions with lag whose commit point has not moved for `stall_seconds`: the
        seconds since it last did, by partition."""
        found = {}
        for name, state in partitions.items():
            seen = self._watched.get(name)
            if seen is not None and state.lag > 0 and now - seen.since >= self.stall_seconds:
                found[name] = round(now - seen.since, 1)
        return found


@dataclass(frozen=True)
class Verdict:
    """A probe's answer: ok or not, and why (the body of /healthz and /readyz)."""

    ok: bool
    reasons: tuple[str, ...] = ()

    def body(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "failing", "reasons": list(self.reasons)}


def liveness(stalled: Mapping[str, float], stall_seconds: float) -> Verdict:
    """Alive: no partition with work stuck for `stall_seconds` (the loop turning is checked
    by whoever asks: an answer from the loop at all)."""
    reasons = tuple(
        f"partition {name} has lag and no commit for {seconds:.0f} s "
        f"(stall_seconds {stall_seconds:g})"
        for name, seconds in sorted(stalled.items())
    )
    return Verdict(not reasons, reasons)


def readiness(*, assigned: int, kafka_up: bool, elasticsearch_up: bool) -> Verdict:
    """Ready: partitions to work on, and both servers answering."""
    reasons = []
    if not kafka_up:
        reasons.append("Kafka did not answer")
    if not elasticsearch_up:
        reasons.append("Elasticsearch did not answer")
    if assigned == 0:
        reasons.append("no partition assigned (starting, rebalancing, or more members than "
                       "partitions)")
    return Verdict(not reasons, tuple(reasons))
