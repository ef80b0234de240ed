"""`esupdater status` rows, from the stats file and the declarations in Stats."""

from __future__ import annotations

import time

from esupdater.cli import _status_rows
from esupdater.stats import Stats

#: What `esupdater status` shows, in order; users and tests read these labels.
LABELS = [
    "uptime", "group", "rows/s", "rows done", "in flight", "lag", "seconds behind",
    "partitions", "stalled", "decode errors",
    "handler errors", "job errors", "rejected", "dead lettered", "dead letters truncated",
    "unrouted", "es retries", "es held", "writes applied", "stale writes",
]


def test_status_shows_the_stats_file_under_the_labels_users_know_in_their_order() -> None:
    stats = Stats(started_at=time.time() - 60)
    stats.rows_done, stats.stale_writes, stats.es_held = 50, 7, 2
    stats.lag = {"shop/0": 3, "shop/1": 0}
    written = {**stats.snapshot(), "group_id": "search", "rows_per_second": 12.5}

    rows = dict(_status_rows(written))

    assert list(rows) == LABELS
    assert rows["uptime"] in {"60 s", "61 s"}
    assert (rows["group"], rows["rows/s"], rows["rows done"]) == ("search", "12.5", "50")
    assert rows["lag"] == "3 (shop/0=3, shop/1=0)"
    assert rows["stalled"] == "0 (-)"
    assert (rows["stale writes"], rows["es held"], rows["rejected"]) == ("7", "2", "0")


def test_a_stats_file_written_before_a_metric_existed_shows_it_as_zero() -> None:
    rows = dict(_status_rows({"started_at": time.time(), "rows_done": 4}))

    assert rows["rows done"] == "4"
    assert rows["writes applied"] == "0"
    assert rows["lag"] == "0 (-)"


def test_status_before_the_first_stats_file_says_so() -> None:
    assert _status_rows({}) == [("stats", "not written yet")]


def test_seconds_behind_shows_the_worst_partition() -> None:
    stats = Stats()
    stats.seconds_behind = {"shop/0": 0.0, "shop/1": 12.5}
    rows = dict(_status_rows({**stats.snapshot(), "group_id": "g", "rows_per_second": 0}))
    assert rows["seconds behind"] == "12.5 s (shop/0=0.0, shop/1=12.5)"
