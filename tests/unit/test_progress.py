"""Progress of backfill and verify: a bar on a terminal, plain lines when piped."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.progress import Progress

from esupdater import progress as progress_module
from esupdater.progress import (
    ProgressBar,
    ProgressLines,
    RowsPerSecond,
    progress_line,
    table_progress,
)


def test_a_line_gives_rows_rate_share_and_time_left() -> None:
    line = progress_line("backfill", "shop.users", 12_000, 100_000, 5.0, "11,990 written")
    assert line == ("backfill shop.users: 12,000 of ~100,000 rows (12%), 2,400 rows/s, "
                    "~37 s left, 11,990 written")


def test_without_an_estimate_a_line_gives_rows_and_rate_only() -> None:
    assert progress_line("verify", "shop.t", 3_000, None, 2.0) == \
        "verify shop.t: 3,000 rows, 1,500 rows/s"


def test_an_estimate_below_the_rows_read_is_capped_at_100_percent() -> None:
    assert progress_line("backfill", "shop.t", 1_200, 1_000, 1.0) == \
        "backfill shop.t: 1,200 of ~1,000 rows (100%), 1,200 rows/s"


def test_lines_come_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    lines = ProgressLines(Console(file=stream, width=200), "backfill", interval=5.0)
    lines.begin("shop.t", 10_000)
    for seconds, done in [(6, 1_000), (8, 2_000), (12, 3_000)]:
        clock[0] = 100.0 + seconds
        lines.update("shop.t", done)
    assert stream.getvalue().splitlines() == [
        "backfill shop.t: 1,000 of ~10,000 rows (10%), 167 rows/s, ~54 s left",
        "backfill shop.t: 3,000 of ~10,000 rows (30%), 250 rows/s, ~28 s left",
    ]


def test_a_terminal_gets_a_bar_with_rows_per_second_and_a_pipe_gets_lines() -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True, width=120)
    assert isinstance(table_progress(terminal, "backfill"), ProgressBar)
    piped = Console(file=io.StringIO(), force_terminal=False)
    assert isinstance(table_progress(piped, "backfill"), ProgressLines)


def test_the_bar_shows_rows_done_of_the_estimate_and_grows_past_a_low_one() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=150)
    with ProgressBar(console, "backfill") as bar:
        bar.begin("shop.users", 1_000)
        bar.update("shop.users", 400, "400 written")
        bar.update("shop.users", 1_500, "1,500 written")  # the estimate was low
        bar.end("shop.users")
    shown = stream.getvalue()
    assert "backfill shop.users" in shown
    assert "/1000" in shown  # the estimate, while it held
    assert "1500/1500" in shown
    assert "1,500 written" in shown


def test_the_rate_column_counts_rows_per_second() -> None:
    clock = [0.0]
    bar = Progress(RowsPerSecond(), get_time=lambda: clock[0])
    task = bar.add_task("backfill", total=10_000)
    for second, done in [(1.0, 2_000), (2.0, 4_500)]:
        clock[0] = second
        bar.update(task, completed=done)
    speed = bar.tasks[0].speed  # rich's estimate over its recent samples
    assert speed is not None
    assert speed > 1_000
    assert RowsPerSecond().render(bar.tasks[0]).plain == f"{speed:,.0f} rows/s"
    idle = bar.add_task("idle", total=1)
    assert RowsPerSecond().render(bar.tasks[idle]).plain == ""
