"""The `esupdater` command: run, stop, status, check."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from esupdater import __version__, bounded_exit
from esupdater.errors import ConfigError, EsupdaterError, UnreachableError
from esupdater.health import Verdict, liveness
from esupdater.logs import setup_logging
from esupdater.progress import table_progress
from esupdater.routing import Route, default_registry, load_handlers
from esupdater.runtime_dir import read_running_pid, read_stats, wait_for_stop
from esupdater.settings import (
    DEFAULT_PATH,
    Settings,
    load_settings,
    no_handlers_message,
    settings_warnings,
)
from esupdater.stats import Stats
from esupdater.telemetry import Spec, declared

T = TypeVar("T")

app = typer.Typer(
    help="Keep Elasticsearch documents in step with MySQL: Canal row changes from Kafka, "
    "your async handlers, one bulk writer.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _console(*, stderr: bool = False) -> Console:
    """Wrapped to the width of a terminal; piped, one message stays one line (a script or a
    log reads it, and a value cut at column 80 reads as two)."""
    console = Console(stderr=stderr)
    console.soft_wrap = not console.is_terminal
    return console


out = _console()
err = _console(stderr=True)

SettingsOption = Annotated[
    Path | None,
    typer.Option(
        "--settings", "-s", envvar="ESUPDATER_SETTINGS", dir_okay=False,
        help="Settings file (default: ./settings.toml; ESUPDATER_<SECTION>__<KEY> overrides).",
    ),
]

#: Exit status for configuration esupdater cannot work with (what and where is printed).
EXIT_CONFIG = 2
#: Exit status of `status` when the process runs but a partition makes no progress.
EXIT_STALLED = 3
#: The help's type column of an on/off flag: empty (typer would show `<bool>`, as if the
#: flag took a value).
FLAG = ""

TracebackOption = Annotated[
    bool,
    typer.Option("--traceback", metavar=FLAG,
                 help="On an error in a handler module, show its traceback."),
]


def _config_error(prefix: str, exc: BaseException, show_traceback: bool) -> None:
    """One line naming what is wrong and where; the cause's traceback when asked for."""
    if show_traceback and exc.__cause__ is not None:
        cause = exc.__cause__
        err.print("".join(traceback.format_exception(cause)).rstrip(), markup=False,
                  highlight=False)
    err.print(f"[red]{escape(prefix + str(exc))}[/red]", highlight=False)


class _BeforeCommand:
    """Options given before the command name (one invocation per process)."""

    settings: Path | None = None


_before_command = _BeforeCommand()


def _settings(path: Path | None) -> Settings:
    """The settings the command names (`-s` after it, else before it, else ./settings.toml)."""
    if path is None:
        path = _before_command.settings
    try:
        return load_settings(path)
    except EsupdaterError as exc:
        err.print(f"[red]invalid settings[/red]\n{escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_CONFIG) from None


def _running_pid(runtime_dir: Path) -> int | None:
    try:
        return read_running_pid(runtime_dir)
    except ConfigError as exc:  # a pidfile that is a symbolic link
        err.print(f"[red]esupdater: {escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(EXIT_CONFIG) from None


def _version(value: bool) -> None:
    if value:
        out.print(f"esupdater {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, metavar=FLAG,
                     help="Print the version."),
    ] = False,
    settings: SettingsOption = None,
) -> None:
    """esupdater: MySQL -> Canal -> Kafka -> your handlers -> Elasticsearch."""
    _before_command.settings = settings  # `esupdater -s FILE COMMAND` works too


@app.command()
def run(settings: SettingsOption = None, show_traceback: TracebackOption = False) -> None:
    """Consume and apply changes until `esupdater stop`, SIGTERM or SIGINT (blocks)."""
    from esupdater.service import serve  # the heavy imports only where they are needed

    config = _settings(settings)
    setup_logging(config.log.level, config.log.format)
    try:
        bounded_exit.run(serve(config))
    except ConfigError as exc:
        _config_error("esupdater: ", exc, show_traceback)
        raise typer.Exit(EXIT_CONFIG) from None
    except EsupdaterError as exc:  # already running
        err.print(f"[red]esupdater: {escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(1) from None


@app.command()
def stop(
    settings: SettingsOption = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to wait for the drain (default: runtime.stop_timeout_seconds)."),
    ] = None,
) -> None:
    """Ask the running instance to drain and exit; wait for it (exit 0 when it has)."""
    config = _settings(settings)
    runtime_dir = config.runtime.dir
    pid = _running_pid(runtime_dir)
    if pid is None:
        err.print(f"esupdater is not running (runtime dir {runtime_dir})")
        raise typer.Exit(1)
    wait = config.runtime.stop_timeout_seconds if timeout is None else timeout
    out.print(f"stopping esupdater (pid {pid}) ...")
    if asyncio.run(wait_for_stop(runtime_dir, wait)):
        out.print("stopped")
        return
    err.print(f"still running after {wait:g} s (pid {pid}); it is draining or stuck: "
              "see its log, or wait and run `esupdater stop` again")
    raise typer.Exit(1)


@app.command()
def status(settings: SettingsOption = None) -> None:
    """Running or not, health, pid, uptime, rows/s, lag, seconds behind and error counts
    (exit 1 when not running, 3 when a partition is stalled)."""
    config = _settings(settings)
    pid = _running_pid(config.runtime.dir)
    if pid is None:
        out.print(f"esupdater is not running (runtime dir {config.runtime.dir})")
        raise typer.Exit(1)
    stats = read_stats(config.runtime.dir) or {}
    verdict = _health(stats, config)
    table = Table(show_header=False, box=None)
    table.add_row("state", "[green]running[/green]")
    table.add_row("pid", str(pid))
    table.add_row("health", "[green]ok[/green]" if verdict.ok else
                  "[red]" + escape("STALLED: " + "; ".join(verdict.reasons)) + "[/red]")
    for label, value in _status_rows(stats):
        table.add_row(label, value)
    out.print(table)
    if not verdict.ok:
        raise typer.Exit(EXIT_STALLED)


def _health(stats: dict[str, Any], config: Settings) -> Verdict:
    """/healthz's verdict, from the stats file; a file the process stopped refreshing is a
    stall of its own (the event loop does not turn)."""
    if not stats:
        return Verdict(True)
    stall = float(stats.get("stall_seconds") or config.metrics.stall_seconds)
    age = time.time() - float(stats.get("updated_at") or time.time())
    if age > max(stall, 5 * config.runtime.stats_interval_seconds):
        return Verdict(False, (f"the stats file was last written {age:.0f} s ago: the event "
                               "loop does not turn",))
    return liveness(stats.get("stalled_seconds") or {}, stall)


def _status_rows(stats: dict[str, Any]) -> list[tuple[str, str]]:
    """The process rows, then every metric Stats declares with a status label, in order."""
    if not stats:
        return [("stats", "not written yet")]
    uptime = time.time() - float(stats.get("started_at", time.time()))
    rows = [
        ("uptime", f"{uptime:.0f} s"),
        ("group", str(stats.get("group_id", ""))),
        ("rows/s", str(stats.get("rows_per_second", 0))),
    ]
    for name, spec in declared(Stats):
        if spec.status is not None:
            rows.append((spec.status, _shown(spec, stats.get(name))))
    return rows


def _shown(spec: Spec, value: Any) -> str:
    """A counter's or gauge's value from the stats file as `status` prints it; a labelled
    one as its sum and each label's value (None: not in the file yet)."""
    if spec.labels:
        by_key: dict[str, Any] = value or {}
        parts = ", ".join(f"{key}={number}" for key, number in by_key.items())
        if any(isinstance(number, float) for number in by_key.values()):  # seconds: the worst
            return f"{max(by_key.values()):g} s ({parts})"
        return f"{sum(by_key.values())} ({parts or '-'})"
    return str(value or 0)


@app.command()
def check(settings: SettingsOption = None, show_traceback: TracebackOption = False) -> None:
    """Validate the settings, import the handlers and print the route table."""
    config = _settings(settings)
    if settings is None and _before_command.settings is None and not DEFAULT_PATH.is_file():
        out.print(f"no {DEFAULT_PATH} here: the defaults (and any ESUPDATER_* variables) are "
                  "in use", highlight=False)
    try:
        modules = load_handlers(config.handlers.package, default_registry, config.folder)
    except EsupdaterError as exc:
        _config_error("handlers: ", exc, show_traceback)
        raise typer.Exit(EXIT_CONFIG) from None
    out.print(f"settings ok; handler modules: {', '.join(modules) or '-'}, from "
              f"{config.folder}; runtime dir: {config.runtime.dir}", highlight=False)
    for warning in settings_warnings(config):
        err.print(f"[yellow]WARNING: {escape(warning)}[/yellow]", highlight=False)
    table = Table(title="routes", title_justify="left")
    table.add_column("pattern")
    table.add_column("types")
    table.add_column("handler")
    for route in default_registry.routes:
        kind = " (mapper)" if route.mapper is not None else ""
        table.add_row(route.pattern, ", ".join(sorted(route.types)), route.name + kind)
    out.print(table)
    for line in handler_paths(default_registry.routes):  # one line each, however long
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    if not default_registry.routes:
        err.print(escape(no_handlers_message(config.handlers.package)), highlight=False)
        raise typer.Exit(EXIT_CONFIG)


def handler_paths(routes: list[Route]) -> list[str]:
    """Which `async def` handlers their batch steps, and which run in a task per row (see
    the README's "How a handler runs"): the CPU per row differs, nothing else."""
    handlers = [route for route in routes if route.mapper is None]
    stepped = sorted({route.name for route in handlers if route.steppable})
    in_tasks = sorted({route.name for route in handlers if not route.steppable})
    lines = []
    if stepped:
        lines.append(f"stepped by their batch (they await only their ctx writes): "
                     f"{', '.join(stepped)}")
    if in_tasks:
        lines.append(f"a task per row (they await more than their ctx writes): "
                     f"{', '.join(in_tasks)}")
    return lines


@app.command()
def redrive(
    settings: SettingsOption = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Redrive at most N dead-lettered records.")
    ] = None,
) -> None:
    """Feed dead-lettered records through the handlers again (after a fix); report the outcome.

    Each record is reported applied, stale (versioned writes refused: the document already
    holds a newer change), with no handler now (nothing ran) or failed again; the last two
    are dead-lettered anew. Exit 0 when everything ran, 1 otherwise.

    Warning: a row is re-applied as it was when it failed. With unversioned writes (upsert,
    update, index or delete without version=) it replaces whatever newer state the document
    has reached since; only versioned writes keep the newer one.
    """
    from esupdater.redrive import redrive as run_redrive

    config = _settings(settings)
    report = _with_handlers(config, lambda: run_redrive(config, default_registry, limit))
    for line in report.lines():
        out.print(line, markup=False, highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def backfill(
    pattern: Annotated[str, typer.Argument(help="database.table; * and ? globs (shop.orders_*).")],
    settings: SettingsOption = None,
    where: Annotated[
        str | None, typer.Option(help="Extra SQL condition on the rows (trusted input).")
    ] = None,
    chunk: Annotated[int, typer.Option(min=1, help="Rows per read (one snapshot each).")] = 1000,
    rate: Annotated[
        float, typer.Option(min=0, help="At most this many rows per second (0: no limit).")
    ] = 0.0,
    resume: Annotated[
        bool, typer.Option("--resume", metavar=FLAG, help="Continue after the last checkpoint.")
    ] = False,
) -> None:
    """Bring a table's existing rows into the index through the handlers, while `run` streams.

    A backfilled row never replaces a document the stream wrote, nor brings back one it
    deleted (docs/backfill.md): run it alongside `esupdater run`. One summary line per table;
    exit 0 when every row went through, 1 when some were set aside, 2 on a setup error.
    """
    from esupdater.backfill import backfill as run_backfill

    config = _settings(settings)
    with table_progress(err, "backfill") as progress:
        reports = _with_handlers(config, lambda: run_backfill(
            config, default_registry, pattern, chunk_size=chunk, rate=rate, where=where,
            resume=resume, progress=progress,
        ))
    for report in reports:  # one line each, never wrapped: scripts read them
        out.print(report.line(), markup=False, highlight=False, soft_wrap=True)
    if any(report.set_aside for report in reports):
        raise typer.Exit(1)


@app.command()
def verify(
    pattern: Annotated[str, typer.Argument(help="database.table; * and ? globs.")],
    settings: SettingsOption = None,
    sample: Annotated[
        int | None,
        typer.Option(min=1, help="Check N random rows of each table only (no orphan scan)."),
    ] = None,
    repair: Annotated[
        bool, typer.Option("--repair", metavar=FLAG, help="Write what differs and delete orphans.")
    ] = False,
    show: Annotated[int, typer.Option(min=0, help="Differences printed at most.")] = 10,
) -> None:
    """Compare tables with the index through the handlers; exit 1 when they differ.

    The tables a glob names are compared together (shards that write one index): one
    summary line for all of them.

    With --repair, write the documents that are missing or different and delete those no
    row produces, each only if the stream has not written it meanwhile; exit 0 once all
    were repaired.
    """
    from esupdater.verify import verify as run_verify

    config = _settings(settings)
    with table_progress(err, "verify") as progress:
        reports = _with_handlers(config, lambda: run_verify(
            config, default_registry, pattern, sample=sample, repair=repair,
            progress=progress))
    for report in reports:
        for line in report.lines(show):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    if not all(report.ok for report in reports):
        raise typer.Exit(1)


def _with_handlers(config: Settings, command: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a command that needs the handlers: logging set up, handlers imported, the
    coroutine run with a bounded exit; a setup error exits 2 with its message."""
    setup_logging(config.log.level, config.log.format)
    try:
        load_handlers(config.handlers.package, default_registry, config.folder)
        return bounded_exit.run(command())
    except UnreachableError as exc:  # not the configuration's fault, maybe: try again later
        err.print(f"[red]esupdater: {escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(1) from None
    except EsupdaterError as exc:
        err.print(f"[red]esupdater: {escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(EXIT_CONFIG) from None



def main() -> None:
    app()
