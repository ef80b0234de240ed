"""The benchmark's own arithmetic, without the stack: `pytest bench/tests`.

What a wrong figure would come from: D's actions, the CPU window read off the sampled
timeline, the freshness tracker, and the pairing of esupdater's runs with D's.
"""

from __future__ import annotations

import math
import os
import time

import orjson

from bench.lib.batch_loop import actions_of
from bench.lib.cpu import Timeline, cpu_seconds, machine_cpu_seconds
from bench.lib.e2e import BATCH, PAIRS, RunResult, Variant
from bench.lib.freshness import Tracker
from bench.lib.report import RATIOS, Results
from bench.lib.stack import Stack, run_groups
from bench.run import _rotated
from esupdater.canal import flat_message

TYPES = {"id": "int", "k": "varchar(8)", "name": "varchar(8)"}


def _message(type_: str, rows: list[dict[str, str | None]], table: str = "users") -> bytes:
    return flat_message("shop", table, type_, rows, mysql_types=TYPES, pk_names=["id"])


def test_d_indexes_inserts_and_updates_as_sent_and_deletes_by_primary_key() -> None:
    rows: list[dict[str, str | None]] = [{"id": "1", "k": "a", "name": "x"},
                                         {"id": "2", "k": "b", "name": None}]
    insert = actions_of(orjson.loads(_message("INSERT", rows)), "ix", "shop.users")
    delete = actions_of(orjson.loads(_message("DELETE", rows[:1])), "ix", "shop.users")

    assert insert == [
        {"_op_type": "index", "_index": "ix", "_id": "1", "_source": rows[0]},
        {"_op_type": "index", "_index": "ix", "_id": "2", "_source": rows[1]},
    ]
    assert delete == [{"_op_type": "delete", "_index": "ix", "_id": "1"}]


def test_d_skips_other_tables_and_ddl() -> None:
    row: dict[str, str | None] = {"id": "1", "k": "a", "name": "x"}
    other = orjson.loads(_message("INSERT", [row], table="orders"))
    ddl = {**orjson.loads(_message("INSERT", [row])), "isDdl": True, "data": None}

    assert actions_of(other, "ix", "shop.users") == []
    assert actions_of(ddl, "ix", "shop.users") == []


def test_d_joins_a_composite_key() -> None:
    message = {**orjson.loads(_message("UPDATE", [{"id": "7", "k": "b", "name": "n"}])),
               "pkNames": ["id", "k"]}

    assert [a["_id"] for a in actions_of(message, "ix", "shop.users")] == ["7:b"]


def test_the_window_cpu_is_interpolated_between_samples_and_clamped_at_the_ends() -> None:
    timeline = Timeline()
    for at, value in ((10.0, 1.0), (11.0, 3.0), (12.0, 3.5)):
        timeline.add(at, value)

    assert timeline.between(10.5, 11.5) == 2.0 - 0.75  # 3.25 - 2.0
    assert timeline.between(9.0, 10.0) == 0.0
    assert timeline.between(11.0, 99.0) == 0.5
    assert Timeline().between(0.0, 1.0) == 0.0


def test_own_and_machine_cpu_seconds_grow_while_busy_and_a_gone_process_has_none() -> None:
    before, machine_before = cpu_seconds(os.getpid()), machine_cpu_seconds()
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:
        pass
    after, machine_after = cpu_seconds(os.getpid()), machine_cpu_seconds()

    assert before is not None
    assert after is not None
    assert machine_before is not None
    assert machine_after is not None
    assert after - before >= 0.05
    assert machine_after - machine_before >= 0.05
    assert cpu_seconds(2**22 + 12_345) is None  # above the kernel's pid_max


def test_the_tracker_polls_the_oldest_unseen_rows_and_measures_from_the_commit() -> None:
    tracker = Tracker()
    for row, at in ((1, 100.0), (3, 100.2), (2, 100.1)):
        tracker.commit(row, at)
    tracker.seen[1] = 100.5

    assert tracker.pending(10) == [2, 3]
    assert tracker.pending(1) == [2]
    tracker.seen.update({2: 100.6, 3: 100.3})
    assert tracker.pending(10) == []
    assert [round(x, 6) for x in tracker.latencies_ms()] == [100.0, 500.0, 500.0]
    acked = tracker.ack_latencies_ms([2.0, 100.15, 3.0, 100.25])
    assert [round(x, 6) for x in acked] == [50.0, 50.0]


def _run(
    program: str, pair: int, rows_per_second: float, cpu: float, mapper: bool = False
) -> RunResult:
    run = RunResult(Variant(1, program=program, mapper=mapper), rows=1000,
                    seconds=1000 / rows_per_second,
                    ack_seconds=0.0, startup_seconds=0.0, peak_rss_mb=50.0, cpu_seconds=cpu,
                    es_cpu_seconds=1.0)
    run.part, run.pair = PAIRS, pair
    return run


def test_ratios_pair_each_esupdater_run_with_the_d_run_of_its_pair() -> None:
    results = Results(rows=1000, partitions=1, dataset={}, machine={"cores": 2}, pairs=3)
    results.runs = [
        _run("esupdater", 0, 2000, 0.2), _run(BATCH, 0, 1000, 0.1),
        _run(BATCH, 1, 4000, 0.1), _run("esupdater", 1, 2000, 0.3),
        _run("esupdater", 2, 3000, 0.1), _run(BATCH, 2, 1000, 0.1),
    ]
    rate, cpu, es_cpu = RATIOS

    assert results.ratios(1, rate) == [2.0, 0.5, 3.0]
    assert [round(r, 6) for r in results.ratios(1, cpu)] == [2.0, 3.0, 1.0]
    assert results.ratios(1, es_cpu) == [1.0, 1.0, 1.0]
    target = next(t for t in results.targets() if t["target"].startswith("esupdater / D, rows/s"))
    assert target["value"] == 2.0
    assert target["met"]
    assert results.default_rate(1) == 2000
    assert math.isnan(results.default_rate(10))


def test_the_mapper_runs_have_their_own_ratios_to_the_d_run_of_their_pair() -> None:
    results = Results(rows=1000, partitions=1, dataset={}, machine={"cores": 2}, pairs=2)
    results.runs = [
        _run("esupdater", 0, 2000, 0.2), _run("esupdater", 0, 4000, 0.1, mapper=True),
        _run(BATCH, 0, 1000, 0.1),
        _run(BATCH, 1, 2000, 0.1), _run("esupdater", 1, 3000, 0.4, mapper=True),
        _run("esupdater", 1, 2000, 0.2),
    ]
    rate, cpu, _ = RATIOS

    assert results.ratios(1, rate) == [2.0, 1.0]  # the handler's, as before
    assert results.ratios(1, rate, mapper=True) == [4.0, 1.5]
    assert [round(r, 6) for r in results.ratios(1, cpu, mapper=True)] == [1.0, 4.0]
    assert results.default_rate(1) == 2000  # the handler's: the mapper is not the default
    figures = results.as_dict()
    assert figures["esupdater_vs_D"]["rows_per_second_1_row_msgs"]["median"] == 1.5
    mapped = figures["esupdater_mapper_vs_D"]
    assert mapped["rows_per_second_1_row_msgs"] == {
        "median": 2.75, "per_pair": [4.0, 1.5], "target": rate.wanted, "met": True}
    assert mapped["cpu_per_row_1_row_msgs"]["median"] == 2.5
    assert mapped["cpu_per_row_1_row_msgs"]["met"] is False
    assert list(figures["contenders"]) == [
        "esupdater_1_row_msgs", "esupdater_mapper_1_row_msgs", "D_1_row_msgs"]
    assert figures["contenders"]["esupdater_mapper_1_row_msgs"]["rows_per_second"] == 3500
    # The targets stay the handler's (the mapper's are marked in esupdater_mapper_vs_D).
    assert [t["value"] for t in results.targets()
            if t["target"].startswith("esupdater / D")] == [1.5, 2.0, 1.0]


def test_the_pairs_rotate_the_order_of_the_three_contenders() -> None:
    orders = ["".join(_rotated(list("HMD"), pair)) for pair in range(6)]  # type: ignore[arg-type]

    assert orders == ["HMD", "DMH", "MDH", "HDM", "DHM", "MHD"]
    for contender in "HMD":  # each twice in each place over six pairs
        assert sorted(order.index(contender) for order in orders) == [0, 0, 1, 1, 2, 2]


def test_the_mapper_variant_is_labelled_and_not_the_default() -> None:
    handler, mapper = Variant(1), Variant(1, mapper=True)

    assert mapper.label == "esupdater 1-row msgs, uvloop, orjson, mapper"
    assert handler.label == "esupdater 1-row msgs, uvloop, orjson"
    assert handler.is_default
    assert not mapper.is_default


def test_a_run_deletes_only_the_consumer_groups_it_named() -> None:
    stack = Stack(run_id="20261202-070000")
    listed = [("bench-20261202-070000-group-pairs-0", "consumer"),
              ("bench-20261202-070000-group-fresh-default", "consumer"),
              ("bench-20261202-0700001-group-x", "consumer"),  # another run's id, longer
              ("bench-20261201-220000-group-pairs-0", "consumer"),
              ("esupdater", "consumer"), ("bench-20261202-070000-group-c", "")]

    assert run_groups(listed, stack.name("")) == [
        "bench-20261202-070000-group-c", "bench-20261202-070000-group-fresh-default",
        "bench-20261202-070000-group-pairs-0"]
