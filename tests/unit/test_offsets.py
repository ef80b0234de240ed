"""Offsets: commit only past records that are done, and everything fetched before them."""

from __future__ import annotations

import pytest

from esupdater.offsets import OffsetTracker, PartitionOffsets


def test_nothing_tracked_means_nothing_to_commit() -> None:
    assert PartitionOffsets().committable() is None


def test_in_order_completion_commits_the_next_offset_to_read() -> None:
    offsets = PartitionOffsets()
    offsets.track(10, 1)
    offsets.track(11, 1)
    offsets.row_done(10)
    assert offsets.committable() == 11
    offsets.row_done(11)
    assert offsets.committable() == 12


def test_a_later_record_done_first_waits_for_the_earlier_one() -> None:
    offsets = PartitionOffsets()
    offsets.track(10, 1)
    offsets.track(11, 1)
    offsets.track(12, 1)
    offsets.row_done(12)
    offsets.row_done(11)
    assert offsets.committable() is None
    offsets.row_done(10)
    assert offsets.committable() == 13


def test_a_multi_row_record_is_done_only_when_all_its_rows_are() -> None:
    offsets = PartitionOffsets()
    offsets.track(5, 3)
    offsets.row_done(5)
    offsets.row_done(5)
    assert offsets.committable() is None
    offsets.row_done(5)
    assert offsets.committable() == 6


def test_a_zero_row_record_with_nothing_before_it_is_done_at_once() -> None:
    offsets = PartitionOffsets()
    offsets.track(7, 0)
    assert offsets.committable() == 8
    assert offsets.pending == 0


def test_a_zero_row_record_behind_a_pending_one_waits_for_it() -> None:
    offsets = PartitionOffsets()
    offsets.track(7, 1)
    offsets.track(8, 0)
    assert offsets.committable() is None
    offsets.row_done(7)
    assert offsets.committable() == 9


def test_gaps_between_offsets_do_not_hold_the_commit_back() -> None:
    offsets = PartitionOffsets()
    offsets.track(100, 1)
    offsets.track(104, 1)  # 101-103: compacted away or transaction markers
    offsets.row_done(104)
    offsets.row_done(100)
    assert offsets.committable() == 105


def test_committable_is_none_until_something_moves_after_a_commit() -> None:
    offsets = PartitionOffsets()
    offsets.track(1, 1)
    offsets.track(2, 1)
    offsets.row_done(1)
    offsets.mark_committed(2)
    assert offsets.committable() is None
    offsets.row_done(2)
    assert offsets.committable() == 3


def test_mark_committed_never_moves_back() -> None:
    offsets = PartitionOffsets()
    offsets.track(1, 0)
    offsets.mark_committed(2)
    offsets.mark_committed(1)
    assert offsets.committed == 2
    assert offsets.committable() is None


def test_pending_counts_records_held_back() -> None:
    offsets = PartitionOffsets()
    offsets.track(1, 1)
    offsets.track(2, 0)
    offsets.track(3, 2)
    assert offsets.pending == 3
    offsets.row_done(1)
    assert offsets.pending == 1


def test_offsets_must_be_tracked_in_increasing_order() -> None:
    offsets = PartitionOffsets()
    offsets.track(5, 1)
    with pytest.raises(ValueError, match="reset"):
        offsets.track(5, 1)


def test_a_row_done_too_often_or_for_an_unknown_offset_is_an_error() -> None:
    offsets = PartitionOffsets()
    offsets.track(5, 2)
    offsets.track(6, 1)
    offsets.row_done(6)
    with pytest.raises(KeyError):
        offsets.row_done(6)
    with pytest.raises(KeyError):
        offsets.row_done(99)


def test_reset_forgets_everything() -> None:
    offsets = PartitionOffsets()
    offsets.track(5, 1)
    offsets.mark_committed(5)
    offsets.reset()
    assert (offsets.pending, offsets.committed, offsets.committable()) == (0, None, None)
    offsets.track(3, 0)  # earlier offsets are fine again after a seek
    assert offsets.committable() == 4


def test_many_interleaved_completions_commit_the_contiguous_prefix() -> None:
    offsets = PartitionOffsets()
    for offset in range(1000):
        offsets.track(offset, 1)
    for offset in reversed(range(1, 1000)):
        offsets.row_done(offset)
    assert offsets.committable() is None
    offsets.row_done(0)
    assert offsets.committable() == 1000
    assert offsets.pending == 0


# -- OffsetTracker ---------------------------------------------------------------------------


def test_commit_map_holds_only_partitions_that_moved() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    tracker.track(("t", 0), 10, 1)
    tracker.track(("t", 1), 20, 1)
    tracker.row_done(("t", 0), 10)
    assert tracker.commit_map() == {("t", 0): 11}


def test_mark_committed_clears_the_commit_map() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.track("p0", 10, 0)
    tracker.mark_committed(tracker.commit_map())
    assert tracker.commit_map() == {}
    tracker.track("p0", 11, 0)
    assert tracker.commit_map() == {"p0": 12}


def test_forget_drops_revoked_partitions() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.track("p0", 10, 1)
    tracker.track("p1", 10, 0)
    tracker.forget(["p0", "p1"])
    assert tracker.commit_map() == {}
    assert tracker.pending == 0
    assert tracker.row_done("p0", 10) is False
    tracker.mark_committed({"p1": 11})  # a commit racing the revocation is ignored


def test_a_late_row_through_the_tracked_handle_cannot_touch_a_reassigned_partition() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    handle = tracker.track("p0", 10, 1)
    tracker.forget(["p0"])
    tracker.track("p0", 10, 1)  # re-assigned: replayed from the last commit
    handle.row_done(10)
    assert tracker.commit_map() == {}


def test_the_row_that_completes_a_record_gets_the_record_s_kafka_time() -> None:
    """For the Kafka-append -> acknowledgement histogram: measured once per record, when its
    last row is done, from the time the record was tracked with."""
    offsets = PartitionOffsets()
    offsets.track(10, 2, appended_at=1000.5)
    offsets.track(11, 1)  # no time known: nothing to measure
    assert offsets.row_done(10) is None  # one row of two
    assert offsets.row_done(11) is None
    assert offsets.row_done(10) == 1000.5  # the record is acknowledged now
    offsets.track(12, 1, appended_at=2000.0)
    offsets.reset()  # revoked: forgotten with the rest
    offsets.track(20, 1, appended_at=3000.0)
    assert offsets.row_done(20) == 3000.0
