"""What may be committed: per partition, the end of the contiguous run of fully done records.

A record is done when all row jobs it produced are done. Rows finish out of order (different
documents run concurrently), so a later record may be done before an earlier one; the commit
point only moves past a record once it and every record fetched before it are done.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from typing import Generic, TypeVar

TP = TypeVar("TP", bound=Hashable)


class PartitionOffsets:
    """Done-tracking for one partition; every call is O(1) amortised.

    Offsets may have gaps (compacted topics, transaction markers): only the order in which
    records were tracked matters, never offset arithmetic between them.
    """

    def __init__(self) -> None:
        self._order: deque[int] = deque()  # tracked, not yet passed by the commit point
        self._rows_left: dict[int, int] = {}  # offset -> row jobs not yet done
        self._appended: dict[int, float] = {}  # offset -> the record's Kafka time, if known
        self._last_done: int | None = None  # end of the contiguous done run
        #: The last offset tracked (fetch order). An attribute, not a property: feeding
        #: reads it for every record.
        self.last_tracked: int | None = None
        self._first_tracked: int | None = None
        self._committed: int | None = None
        #: The group's committed offset when this process got the partition (for lag).
        self.start: int | None = None
        #: Set when the partition was revoked: its rows' results no longer count.
        self.detached = False

    @property
    def pending(self) -> int:
        """Records tracked whose commit is still held back (by themselves or an earlier one)."""
        return len(self._order)

    @property
    def committed(self) -> int | None:
        return self._committed

    @property
    def low_water(self) -> int | None:
        """The first offset not known to be done and committed: lag is counted from here."""
        if self._committed is not None:
            return self._committed
        if self.start is not None:
            return self.start
        return self._first_tracked

    def track(self, offset: int, rows: int, appended_at: float | None = None) -> None:
        """Register a fetched record, in fetch order, with the number of row jobs it produced
        and its Kafka time (epoch seconds), which `row_done` gives back when it is done."""
        if rows < 0:
            raise ValueError(f"rows must be >= 0, got {rows} for offset {offset}")
        if self.last_tracked is not None and offset <= self.last_tracked:
            raise ValueError(
                f"offset {offset} tracked after {self.last_tracked}: offsets must increase "
                "(call reset() after a seek or a rebalance)"
            )
        self.last_tracked = offset
        if self._first_tracked is None:
            self._first_tracked = offset
        if rows == 0 and not self._order:
            self._last_done = offset  # nothing to wait for, nothing before it
            return
        self._order.append(offset)
        self._rows_left[offset] = rows
        if appended_at is not None and rows:
            self._appended[offset] = appended_at

    def row_done(self, offset: int) -> float | None:
        """One row job of the record at `offset` finished (acknowledged or dead-lettered).
        Returns the record's Kafka time when this was its last row, if it was tracked with one."""
        left = self._rows_left.get(offset)
        if left is None or left == 0:
            raise KeyError(f"offset {offset} has no row job outstanding")
        self._rows_left[offset] = left - 1
        if left != 1:
            return None
        if self._order[0] == offset:
            self._advance()
        return self._appended.pop(offset, None)

    def rows_done(self, offsets: list[int]) -> list[float]:
        """`row_done` for one row of each record at `offsets`, in one call; the Kafka times
        of the records this finished (those tracked with one)."""
        rows_left = self._rows_left
        appended: list[float] = []
        advance = False
        for offset in offsets:
            left = rows_left.get(offset)
            if left is None or left == 0:
                raise KeyError(f"offset {offset} has no row job outstanding")
            rows_left[offset] = left - 1
            if left == 1:
                advance = True
                if self._appended and (at := self._appended.pop(offset, None)) is not None:
                    appended.append(at)
        if advance and self._order and rows_left[self._order[0]] == 0:
            self._advance()
        return appended

    def _advance(self) -> None:
        order, rows_left = self._order, self._rows_left
        while order and rows_left[order[0]] == 0:
            offset = order.popleft()
            del rows_left[offset]
            self._last_done = offset

    def committable(self) -> int | None:
        """The offset to commit (Kafka's "next to read"), or None if nothing moved since."""
        if self._last_done is None:
            return None
        next_offset = self._last_done + 1  # Kafka commits the next offset to read
        if self._committed is not None and next_offset <= self._committed:
            return None
        return next_offset

    def mark_committed(self, offset: int) -> None:
        """Record a successful commit of `offset`; the commit point never moves back."""
        if self._committed is None or offset > self._committed:
            self._committed = offset

    def reset(self) -> None:
        """Forget everything (revocation, seek): the next owner starts from Kafka's commit."""
        self._order.clear()
        self._rows_left.clear()
        self._appended.clear()
        self._last_done = self.last_tracked = self._first_tracked = self._committed = None
        self.start = None


class OffsetTracker(Generic[TP]):
    """`PartitionOffsets` for every assigned partition, keyed by TopicPartition (any hashable)."""

    def __init__(self) -> None:
        self._partitions: dict[TP, PartitionOffsets] = {}

    def partition(self, tp: TP) -> PartitionOffsets:
        found = self._partitions.get(tp)
        if found is None:
            found = self._partitions[tp] = PartitionOffsets()
        return found

    @property
    def pending(self) -> int:
        return sum(p.pending for p in self._partitions.values())

    def track(self, tp: TP, offset: int, rows: int,
              appended_at: float | None = None) -> PartitionOffsets:
        """Track a record; the returned object may be kept to report its rows done.

        Reporting through it is safe across rebalances: after `forget(tp)` it is detached,
        so a late row cannot count against a re-assigned partition's records.
        """
        partition = self.partition(tp)
        partition.track(offset, rows, appended_at)
        return partition

    def row_done(self, tp: TP, offset: int) -> bool:
        """Mark one row done; False if `tp` is no longer tracked (revoked: nothing to commit)."""
        partition = self._partitions.get(tp)
        if partition is None:
            return False
        partition.row_done(offset)
        return True

    def commit_map(self) -> dict[TP, int]:
        """Offsets to commit for the partitions whose commit point moved since the last commit."""
        moved: dict[TP, int] = {}
        for tp, partition in self._partitions.items():
            offset = partition.committable()
            if offset is not None:
                moved[tp] = offset
        return moved

    def mark_committed(self, offsets: Mapping[TP, int]) -> None:
        for tp, offset in offsets.items():
            partition = self._partitions.get(tp)
            if partition is not None:  # revoked meanwhile: nothing left to remember
                partition.mark_committed(offset)

    def forget(self, tps: Iterable[TP]) -> None:
        """Drop revoked partitions; a later assignment starts fresh from Kafka's commit."""
        for tp in tps:
            partition = self._partitions.pop(tp, None)
            if partition is not None:
                partition.detached = True
