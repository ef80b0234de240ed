"""Progress of the long table commands (backfill, verify): a bar on a terminal, lines otherwise.

On a terminal an operator watches: a rich bar per table with rows done, rows/s and the time
left. Piped or under a supervisor nobody sees a bar redrawn in place, and a log full of
carriage returns helps no one: one plain line every `interval` seconds instead. Both take the
same three calls, so the commands do not care which one they were given.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

#: Seconds between two progress lines when not on a terminal.
LINE_INTERVAL = 5.0


class TableProgress(Protocol):
    """What a table command reports as it goes; `total` is an estimate, or None if unknown."""

    def begin(self, table: str, total: int | None) -> None: ...

    def update(self, table: str, done: int, note: str = "") -> None: ...

    def end(self, table: str) -> None: ...


class NoProgress:
    """For callers (tests, the bench) that want only the final reports."""

    def begin(self, table: str, total: int | None) -> None:
        pass

    def update(self, table: str, done: int, note: str = "") -> None:
        pass

    def end(self, table: str) -> None:
        pass


class RowsPerSecond(ProgressColumn):
    """rich's own speed column speaks bytes; ours counts rows."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rows/s")


class ProgressBar:
    """A rich bar per table on `console`; a context manager (the bar owns the terminal)."""

    def __init__(self, console: Console, verb: str) -> None:
        self._verb = verb
        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            RowsPerSecond(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
            console=console,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressBar:
        self._bar.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.stop()

    def begin(self, table: str, total: int | None) -> None:
        self._tasks[table] = self._bar.add_task(f"{self._verb} {table}", total=total, note="")

    def update(self, table: str, done: int, note: str = "") -> None:
        task = self._tasks[table]
        total = self._bar.tasks[task].total
        if total is not None and done > total:  # the estimate was low: the table grew
            self._bar.update(task, total=done)
        self._bar.update(task, completed=done, note=note)

    def end(self, table: str) -> None:
        task = self._tasks[table]
        done = self._bar.tasks[task].completed
        self._bar.update(task, total=done, completed=done)


class ProgressLines:
    """One line per table every `interval` seconds: rows, rows/s and, with a total, time left."""

    def __init__(self, console: Console, verb: str, interval: float = LINE_INTERVAL) -> None:
        self._console = console
        self._verb = verb
        self._interval = interval
        self._tables: dict[str, tuple[float, int | None]] = {}
        self._last_line = 0.0

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass

    def begin(self, table: str, total: int | None) -> None:
        self._tables[table] = (time.monotonic(), total)

    def update(self, table: str, done: int, note: str = "") -> None:
        now = time.monotonic()
        if now - self._last_line < self._interval:
            return
        self._last_line = now
        started, total = self._tables[table]
        self._console.print(progress_line(self._verb, table, done, total, now - started, note),
                            markup=False, highlight=False, soft_wrap=True)

    def end(self, table: str) -> None:
        self._tables.pop(table, None)


def progress_line(
    verb: str, table: str, done: int, total: int | None, seconds: float, note: str = ""
) -> str:
    """`backfill shop.users: 12,000 of ~100,000 rows (12%), 2,400 rows/s, ~37 s left`."""
    rate = done / seconds if seconds > 0 else 0.0
    line = f"{verb} {table}: {done:,} rows"
    if total:
        line = f"{verb} {table}: {done:,} of ~{total:,} rows ({min(done / total, 1):.0%})"
    line += f", {rate:,.0f} rows/s"
    if total and rate > 0 and done < total:
        line += f", ~{(total - done) / rate:,.0f} s left"
    return f"{line}, {note}" if note else line


def table_progress(console: Console, verb: str) -> ProgressBar | ProgressLines:
    """A bar when `console` is an interactive terminal, progress lines otherwise."""
    if console.is_terminal and not console.is_dumb_terminal:
        return ProgressBar(console, verb)
    return ProgressLines(console, verb)
