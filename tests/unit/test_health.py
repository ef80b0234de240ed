"""Health from progress: a partition with lag and a commit point that does not move."""

from __future__ import annotations

from esupdater.health import PartitionState, ProgressWatch, liveness, readiness


def test_a_partition_with_lag_and_a_commit_point_standing_still_is_stalled_after_stall_seconds(
) -> None:
    watch = ProgressWatch(stall_seconds=120)
    held = {"canal/0": PartitionState(commit_point=500, lag=30)}
    watch.observe(0.0, held)
    watch.observe(119.0, held)
    assert watch.stalled(119.0, held) == {}
    watch.observe(121.0, held)
    assert watch.stalled(121.0, held) == {"canal/0": 121.0}


def test_a_moving_commit_point_or_no_lag_is_never_a_stall() -> None:
    watch = ProgressWatch(stall_seconds=10)
    for second in range(0, 100, 5):
        moving = {"canal/0": PartitionState(commit_point=second, lag=50),
                  "canal/1": PartitionState(commit_point=7, lag=0)}
        watch.observe(float(second), moving)
        assert watch.stalled(float(second), moving) == {}


def test_a_partition_stuck_on_its_first_record_after_a_restart_is_a_stall() -> None:
    """Its commit point is the group's committed offset: it never moves."""
    watch = ProgressWatch(stall_seconds=30)
    first = {"canal/2": PartitionState(commit_point=1200, lag=1)}
    for second in (0.0, 10.0, 20.0, 31.0):
        watch.observe(second, first)
    assert watch.stalled(31.0, first) == {"canal/2": 31.0}


def test_lag_that_drains_resets_the_clock_and_a_revoked_partition_is_forgotten() -> None:
    watch = ProgressWatch(stall_seconds=10)
    watch.observe(0.0, {"canal/0": PartitionState(5, 3)})
    watch.observe(8.0, {"canal/0": PartitionState(5, 0)})  # caught up: nothing to do
    watch.observe(15.0, {"canal/0": PartitionState(5, 2)})  # new records at 15 s
    assert watch.stalled(15.0, {"canal/0": PartitionState(5, 2)}) == {}
    assert watch.stalled(26.0, {"canal/0": PartitionState(5, 2)}) == {"canal/0": 18.0}
    watch.observe(27.0, {})
    watch.observe(28.0, {"canal/0": PartitionState(5, 2)})  # back after a rebalance
    assert watch.stalled(30.0, {"canal/0": PartitionState(5, 2)}) == {}


def test_liveness_and_readiness_give_their_reasons() -> None:
    assert liveness({}, 120).ok
    stalled = liveness({"canal/1": 130.4}, 120)
    assert stalled.body() == {"status": "failing", "reasons": [
        "partition canal/1 has lag and no commit for 130 s (stall_seconds 120)"]}
    assert readiness(assigned=3, kafka_up=True, elasticsearch_up=True).body() == {
        "status": "ok", "reasons": []}
    assert readiness(assigned=0, kafka_up=True, elasticsearch_up=False).reasons == (
        "Elasticsearch did not answer",
        "no partition assigned (starting, rebalancing, or more members than partitions)")
