"""Freshness explained, without the stack: where each row's time went, which refresh each
measurement had, and the targets that say so.

A wrong stage would come from pairing the wrong times (a row's commit with another row's
record), from a record of another table or a DDL counted, or from a redelivered row's
later acknowledgement; a wrong target from a 500 ms measurement read as the default's.
"""

from __future__ import annotations

import argparse
import math

import orjson
import pytest

from bench.lib.freshness import (
    DEFAULT_REFRESH,
    STAGES,
    Freshness,
    acked_at,
    index_settings,
    record_times,
    stages_ms,
)
from bench.lib.report import Results
from bench.run import parse, refresh_intervals
from esupdater.canal import flat_message

TYPES = {"id": "bigint", "note": "varchar(32)"}


def _record(table: str, ids: list[int], type_: str = "INSERT") -> bytes:
    rows: list[dict[str, str | None]] = [{"id": str(i), "note": f"row {i}"} for i in ids]
    return flat_message("shop", table, type_, rows, mysql_types=TYPES, pk_names=["id"])


def test_each_row_of_the_tables_records_gets_its_first_records_timestamp() -> None:
    ddl = flat_message("shop", "t_x", "CREATE", [], mysql_types=TYPES, is_ddl=True)
    records = [
        (ddl, 1_000),
        (_record("t_x", [1, 2]), 1_005),  # one record, two rows
        (_record("t_other", [3]), 1_006),  # another run's table
        (_record("t_x", [3]), 1_010),
        (_record("t_x", [1]), 1_020),  # redelivered by Canal: the first record counts
        (None, 1_030),  # a tombstone
        (b"not json", 1_031),  # someone else's record on the shared topic
        (orjson.dumps([1, 2]), 1_032),
    ]

    assert record_times(records, "t_x") == {1: 1.005, 2: 1.005, 3: 1.010}


def test_the_stages_pair_each_rows_own_times_and_leave_out_a_row_missing_an_end() -> None:
    committed = {1: 10.000, 2: 10.100, 3: 10.200}
    kafka = {1: 10.020, 2: 10.150}  # row 3's record not found
    acked = {1: 10.070, 3: 10.300}  # row 2 never acknowledged
    seen = {1: 10.900, 2: 11.000, 3: 11.050}

    stages = stages_ms(committed, kafka, acked, seen)

    assert list(stages) == list(STAGES)
    assert [round(x, 6) for x in stages["commit_to_kafka"]] == [20.0, 50.0]
    assert [round(x, 6) for x in stages["kafka_to_acknowledged"]] == [50.0]
    assert [round(x, 6) for x in stages["acknowledged_to_searchable"]] == [750.0, 830.0]


def test_a_stage_is_not_clamped_so_a_rows_stages_add_up_to_its_total() -> None:
    # Kafka's timestamps are whole milliseconds, taken before the INSERT's return was seen.
    stages = stages_ms({1: 10.0005}, {1: 10.000}, {1: 10.050}, {1: 10.500})

    assert round(stages["commit_to_kafka"][0], 6) == -0.5
    assert round(sum(stages[name][0] for name in STAGES), 6) == 499.5


def test_a_redelivered_rows_first_acknowledgement_counts() -> None:
    assert acked_at([1.0, 5.0, 2.0, 6.0, 1.0, 9.0]) == {1: 5.0, 2: 6.0}


def test_the_default_refresh_leaves_the_index_setting_unset() -> None:
    assert "refresh_interval" not in index_settings(DEFAULT_REFRESH)
    assert index_settings("500ms")["refresh_interval"] == "500ms"
    assert index_settings("500ms")["number_of_shards"] == 1


def test_the_refresh_list_keeps_its_order_and_refuses_what_elasticsearch_would() -> None:
    assert refresh_intervals("default,500ms") == ["default", "500ms"]
    assert refresh_intervals(" 250ms , default,250ms,") == ["250ms", "default"]
    assert refresh_intervals("2s") == ["2s"]
    for wrong in ("", ",", "-1", "0.5s", "500", "0ms", "fast", "500MS"):
        with pytest.raises(argparse.ArgumentTypeError):
            refresh_intervals(wrong)


def test_the_run_measures_the_default_refresh_and_500ms_unless_told() -> None:
    assert parse([]).freshness_refresh == ["default", "500ms"]
    assert parse(["--freshness-refresh", "1s"]).freshness_refresh == ["1s"]


def _freshness(refresh: str, p99: float, searchable: list[float]) -> Freshness:
    return Freshness(
        table=f"t_bench_fresh_run_{refresh}", rate=500.0, produced_rate=500.0, seconds=30.0,
        rows=3, found=3, p50_ms=p99 / 2, p99_ms=p99, max_ms=p99, commit_ms=1.5,
        ack_p50_ms=60.0, ack_p99_ms=250.0, dropped=True, refresh=refresh,
        stages={"commit_to_kafka": [10.0, 20.0, 30.0], "kafka_to_acknowledged": [40.0, 50.0],
                "acknowledged_to_searchable": searchable})


def test_each_measurement_has_its_own_target_naming_its_refresh() -> None:
    results = Results(rows=1000, partitions=1, dataset={}, machine={"cores": 2})
    results.freshness = [_freshness("default", 1285.5, [100.0, 700.0, 1000.0]),
                         _freshness("500ms", 820.0, [50.0, 300.0, 510.0])]

    fresh = [t for t in results.targets() if t["target"].startswith("freshness")]

    assert [(t["target"], t["value"], t["met"]) for t in fresh] == [
        ("freshness p99 (MariaDB commit -> searchable) <= 1000 ms", 1285.5, False),
        ("freshness p99 (MariaDB commit -> searchable) <= 1000 ms with refresh_interval 500ms",
         820.0, True),
    ]
    assert fresh[0]["note"].startswith("refresh_interval 1 s (the default)")
    assert fresh[1]["note"].startswith("refresh_interval 500ms")
    assert "acknowledged -> searchable p99 1000 ms" in fresh[0]["note"]
    assert "acknowledged -> searchable p99 510 ms" in fresh[1]["note"]


def test_the_summary_says_its_refresh_and_each_stages_percentiles() -> None:
    default = _freshness("default", 1285.5, [100.0, 700.0, 1000.0]).summary()
    faster = _freshness("500ms", 820.0, []).summary()

    assert default["refresh_interval"] == "default (1s)"
    assert faster["refresh_interval"] == "500ms"
    assert default["stages_ms"] == {
        "commit_to_kafka": {"p50": 20.0, "p99": 30.0, "rows": 3},
        "kafka_to_acknowledged": {"p50": 40.0, "p99": 50.0, "rows": 2},
        "acknowledged_to_searchable": {"p50": 700.0, "p99": 1000.0, "rows": 3},
    }
    assert faster["stages_ms"]["acknowledged_to_searchable"] == {
        "p50": None, "p99": None, "rows": 0}  # JSON has no NaN
    assert default["p99_ms"] == 1285.5
    assert default["acknowledged_p99_ms"] == 250.0


def test_results_json_lists_every_freshness_measurement() -> None:
    results = Results(rows=1000, partitions=1, dataset={}, machine={"cores": 2})
    assert results.as_dict()["freshness"] == []
    results.freshness = [_freshness("default", 1285.5, [1.0]), _freshness("500ms", 820.0, [1.0])]

    listed = results.as_dict()["freshness"]

    assert [f["refresh_interval"] for f in listed] == ["default (1s)", "500ms"]
    assert not any(isinstance(v, float) and math.isnan(v)
                   for f in listed for v in f.values())
