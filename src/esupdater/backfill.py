"""`esupdater backfill`: bring a table's existing rows into the index, through the handlers,
while `esupdater run` streams its changes.

A backfilled row is written so that it replaces nothing: every index or upsert it makes is an
external-versioned write at version 0, which Elasticsearch applies only to an id that holds no
document and no live tombstone, and which every streamed write (version >= 1, or unversioned)
replaces. Why that keeps the index equal to the table for any interleaving, and the one
timing bound it needs (each chunk acknowledged within `index.gc_deletes` of its read, checked
here as FENCE_SECONDS), is in docs/backfill.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncmy
import orjson

from esupdater.actions import Action
from esupdater.bulk import BulkSink
from esupdater.canal.build import flat_message
from esupdater.change import BACKFILL_VERSION, Change
from esupdater.components import Components, components
from esupdater.dispatch import KeyedDispatcher
from esupdater.errors import ConfigError
from esupdater.handling import HandlerRunner
from esupdater.mysql_types import base_type
from esupdater.progress import NoProgress, TableProgress
from esupdater.routing import Registry
from esupdater.runtime_dir import make_runtime_dir
from esupdater.settings import Settings
from esupdater.table_reader import KeyValue, TableReader, TableShape

log = logging.getLogger(__name__)

#: Seconds a chunk may take from its read to the last acknowledgement of its writes. A delete
#: applied by the stream after the read leaves a tombstone for `index.gc_deletes` (60 s by
#: default); a backfilled write landing later could bring the row back. Half of it is margin.
FENCE_SECONDS = 30.0
#: Key column types whose text differs between a table read and Canal (`Change.pk` would
#: differ, so a backfilled document would get another id than the streamed one).
UNSUPPORTED_KEY_TYPES = frozenset({"enum", "set", "binary", "varbinary", "decimal", "float",
                                   "double", "bit", "blob", "tinyblob", "mediumblob",
                                   "longblob"})
#: Keys of an update action that a whole-document write does not take.
_UPDATE_ONLY = ("doc", "doc_as_upsert", "upsert", "script", "scripted_upsert",
                "retry_on_conflict", "detect_noop", "_source")


class BackfillError(ConfigError):
    """A backfill that cannot go on as asked (no table matches, a key it cannot map, a chunk
    slower than the fence)."""


class BackfillSink:
    """What a backfilled row's handlers write through: nothing it sends replaces anything.

    index / create / upsert become an external-versioned index at version 0 (an upsert's
    `doc` is the whole document it would create); a partial update or a delete is not sent
    (it could only change a document the stream owns) and is answered as stale.
    """

    def __init__(self, inner: BulkSink) -> None:
        self.inner = inner
        self.skipped = 0

    async def execute(self, action: Action) -> dict[str, Any]:
        op_type = action.get("_op_type", "index")
        if op_type in ("index", "create"):
            source = action.get("_source", {})
        elif op_type == "update" and action.get("doc_as_upsert") and "doc" in action:
            source = action["doc"]
        elif op_type == "update" and "upsert" in action:
            source = action["upsert"]
        else:
            self.skipped += 1
            return {"_index": action.get("_index"), "_id": action.get("_id"),
                    "result": "stale", "status": 409}
        write = {k: v for k, v in action.items() if k not in _UPDATE_ONLY}
        write.update(_op_type="index", _source=source, version=BACKFILL_VERSION,
                     version_type="external")
        return await self.inner.execute(write)


@dataclass
class TableReport:
    """What one table's backfill did: `kept` rows the index already had (newer or deleted)."""

    table: str
    read: int = 0
    written: int = 0
    kept: int = 0
    set_aside: int = 0
    seconds: float = 0.0
    resumed_after: list[Any] | None = None

    def line(self) -> str:
        return (f"backfill {self.table}: {self.read} rows read, {self.written} written, "
                f"{self.kept} kept (the index had them), {self.set_aside} set aside in "
                f"{self.seconds:.1f} s")


@dataclass
class Checkpoint:
    """The last key whose chunk is fully acknowledged, per table, in the runtime dir."""

    path: Path
    after: list[Any] | None = None
    done: bool = False

    @classmethod
    def at(cls, runtime_dir: Path, table: str) -> Checkpoint:
        return cls(runtime_dir / "backfill" / f"{table}.json")

    def load(self) -> Checkpoint:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return self
        except orjson.JSONDecodeError as exc:
            raise BackfillError(f"{self.path}: not a backfill checkpoint ({exc}); delete it "
                                "to start over") from None
        self.after, self.done = data.get("after"), bool(data.get("done"))
        return self

    def save(self, after: Sequence[KeyValue] | None, *, done: bool = False) -> None:
        self.after, self.done = (None if after is None else list(after)), done
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_bytes(orjson.dumps({"after": self.after, "done": done}))
        partial.replace(self.path)  # atomic: a kill leaves the old checkpoint or the new


@dataclass
class Backfill:
    """Reads one table after another and runs their rows through the handlers."""

    parts: Components
    registry: Registry
    reader: TableReader
    chunk_size: int
    rate: float = 0.0
    where: str | None = None
    progress: TableProgress = field(default_factory=NoProgress)
    _sink: BackfillSink = field(init=False)
    _runner: HandlerRunner = field(init=False)

    def __post_init__(self) -> None:
        self._sink = BackfillSink(self.parts.writer)
        self._runner = self.parts.runner(sink=self._sink)

    async def table(self, shape: TableShape, checkpoint: Checkpoint) -> TableReport:
        report = TableReport(shape.name, resumed_after=checkpoint.after)
        if checkpoint.done:
            return report
        _refuse_unmappable_keys(shape)
        routes = self.registry.handlers_for(shape.database, shape.table, "INSERT")
        if not routes:
            raise BackfillError(f"no handler is registered for INSERT on {shape.name}: "
                                "nothing to backfill it through")
        self.progress.begin(shape.name, await self.reader.estimate_rows(
            shape, after=checkpoint.after, where=self.where))
        stats = self.parts.stats
        dispatcher = KeyedDispatcher(self.parts.settings.dispatch.max_rows_in_flight)
        after: Sequence[KeyValue] | None = checkpoint.after
        started = time.monotonic()
        applied, stale, set_aside = stats.writes_applied, stats.stale_writes, stats.dead_lettered
        skipped = self._sink.skipped
        while True:
            read_at = time.monotonic()  # before the snapshot: the fence measures from here
            chunk = await self.reader.read_chunk(shape, after=after, chunk_size=self.chunk_size,
                                                 where=self.where, first_row=report.read)
            jobs = []
            for change in chunk.changes:
                value = _dead_letter_value(shape, change)
                job = await dispatcher.submit(change.key,
                                              _job(self._runner, change, routes, value))
                jobs.append(job)
            await dispatcher.drain()
            for job in jobs:  # the runner sets failures aside; anything else is a bug: stop
                error = None if job is None else job.exception()
                if error is not None:
                    raise error
            took = time.monotonic() - read_at
            report.read += len(chunk.changes)
            report.written = stats.writes_applied - applied
            report.kept = stats.stale_writes - stale + self._sink.skipped - skipped
            report.set_aside = stats.dead_lettered - set_aside
            report.seconds = time.monotonic() - started
            if took > FENCE_SECONDS:
                raise BackfillError(
                    f"{shape.name}: a chunk took {took:.0f} s from its read to its last "
                    f"acknowledgement, over {FENCE_SECONDS:.0f} s: a row deleted meanwhile "
                    "could come back once its tombstone expires (index.gc_deletes). Lower "
                    "--rate or --chunk, or raise index.gc_deletes, then run with --resume")
            if chunk.last_key is None:
                break
            after = chunk.last_key
            checkpoint.save(after)
            self.progress.update(shape.name, report.read,
                                 f"{report.written:,} written, {report.kept:,} kept")
            if len(chunk.changes) < self.chunk_size:
                break
            await self._throttle(report.read, started)
        checkpoint.save(after, done=True)
        report.seconds = time.monotonic() - started
        self.progress.update(shape.name, report.read)
        self.progress.end(shape.name)
        return report

    async def _throttle(self, rows: int, started: float) -> None:
        """Keep to `rate` rows per second on average (reads wait, nothing is dropped)."""
        if self.rate > 0:
            ahead = rows / self.rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)


def _job(
    runner: HandlerRunner, change: Change, routes: Any, value: bytes
) -> Callable[[], Any]:
    async def run() -> None:
        await runner.run(change, routes, value)

    return run


def _dead_letter_value(shape: TableShape, change: Change) -> bytes:
    """A backfilled row set aside travels as the Canal INSERT it would have been, so that
    `esupdater redrive` can apply it again after a fix."""
    return flat_message(
        shape.database, shape.table, "INSERT", [change.raw],
        mysql_types={c.name: c.column_type for c in shape.columns},
        pk_names=shape.pk_names,
    )


def _refuse_unmappable_keys(shape: TableShape) -> None:
    by_name = {c.name: c.column_type for c in shape.columns}
    odd = [name for name in shape.pk_names if base_type(by_name[name]) in UNSUPPORTED_KEY_TYPES]
    if odd:
        raise BackfillError(
            f"{shape.name}: primary key column(s) {', '.join(odd)} of a type whose text a "
            "table read and Canal write differently: backfilled documents would get other "
            "ids than streamed ones. Backfill supports keys of integer, string and date/time "
            "columns")


async def connect_reader(settings: Settings) -> TableReader:
    """A table reader from `[mysql]`; an unreachable or refusing server is a setup error."""
    try:
        return await TableReader.connect(
            settings.mysql, tinyint1_as_bool=settings.source.tinyint1_as_bool)
    except (OSError, asyncmy.errors.Error) as exc:
        raise BackfillError(
            f"cannot read from MySQL at {settings.mysql.host}:{settings.mysql.port} as "
            f"{settings.mysql.user!r} ([mysql] settings, ESUPDATER_MYSQL__PASSWORD): {exc}"
        ) from None


async def backfill(
    settings: Settings,
    registry: Registry,
    pattern: str,
    *,
    chunk_size: int,
    rate: float = 0.0,
    where: str | None = None,
    resume: bool = False,
    progress: TableProgress | None = None,
) -> list[TableReport]:
    """Backfill every table `pattern` names, one after another; one report per table."""
    make_runtime_dir(settings.runtime.dir)
    async with components(settings) as parts:
        reader = await connect_reader(settings)
        async with reader:
            tables = await reader.tables(pattern)
            if not tables:
                raise BackfillError(f"no table matches {pattern!r} on {settings.mysql.host}")
            run = Backfill(parts, registry, reader, chunk_size, rate=rate, where=where,
                           progress=progress or NoProgress())
            reports = []
            for database, table in tables:
                shape = await reader.describe(database, table)
                checkpoint = Checkpoint.at(settings.runtime.dir, shape.name)
                if resume:
                    checkpoint.load()
                reports.append(await run.table(shape, checkpoint))
            return reports
