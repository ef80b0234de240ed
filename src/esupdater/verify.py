"""`esupdater verify`: compare a table with the index through the handlers, and repair.

Each row is run through the handlers into `esupdater.testing.MemorySink`, which gives the
documents the row should produce, as Elasticsearch would store them; those are fetched (mget)
and compared. Without `--sample`, the indices the handlers wrote to are scanned for documents
no row produces (orphans).

`--repair` never fights the stream: a missing document is written like a backfilled row
(external version 0: only where nothing, not even a recent tombstone, is), a different one
with `external_gte` at the version verify saw (so any streamed write since wins, and the
versions streamed writes compare against stay as they were), and an orphan is deleted only if
a second read of the table still produces no such id and the document is unchanged since the
scan (`if_seq_no`/`if_primary_term`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from elasticsearch import AsyncElasticsearch, ConflictError, NotFoundError
from elasticsearch.helpers import async_scan

from esupdater.backfill import BackfillError, connect_reader
from esupdater.change import BACKFILL_VERSION, Change
from esupdater.clients import make_elasticsearch
from esupdater.progress import NoProgress, TableProgress
from esupdater.routing import Registry
from esupdater.settings import Settings
from esupdater.table_reader import TableReader, TableShape
from esupdater.testing import MemorySink, apply

log = logging.getLogger(__name__)

#: Ids per mget request.
MGET_CHUNK = 500
#: Rows per read.
READ_CHUNK = 1000

Document = dict[str, Any]


@dataclass
class Difference:
    kind: str  # "missing", "differs", "orphan"
    index: str
    id: str
    detail: str = ""

    def line(self) -> str:
        where = f"{self.kind} {self.index}/{self.id}"
        return f"{where}: {self.detail}" if self.detail else where


@dataclass
class VerifyReport:
    table: str
    rows: int = 0
    expected: int = 0
    equal: int = 0
    differences: list[Difference] = field(default_factory=list)
    written: int = 0
    deleted: int = 0
    repaired: bool = False

    def count(self, kind: str) -> int:
        return sum(1 for d in self.differences if d.kind == kind)

    def lines(self, show: int) -> list[str]:
        out = [d.line() for d in self.differences[:show]]
        out.append(f"verify {self.table}: {self.rows} rows, {self.expected} documents expected, "
                   f"{self.equal} equal, {self.count('missing')} missing, "
                   f"{self.count('differs')} different, {self.count('orphan')} orphans")
        if self.repaired:
            out.append(f"repaired: {self.written} written, {self.deleted} deleted")
        return out

    @property
    def ok(self) -> bool:
        if not self.differences:
            return True
        return self.repaired and self.written + self.deleted == len(self.differences)


def normal(value: Any) -> Any:
    """A value as compared: a fraction exactly, whether held as a float (the sink keeps one
    where the float is the same number) or as a Decimal (read exactly from Elasticsearch)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normal(v) for v in value]
    return value


def first_difference(expected: Document, found: Document) -> str:
    for name in sorted(set(expected) | set(found)):
        want, got = normal(expected.get(name)), normal(found.get(name))
        if want != got:
            return f"{name}: table {want!r} index {got!r}"
    return ""


@dataclass
class Expected:
    """The documents the rows of one or more tables produce, by index and id, and the row
    (with its table) each came from."""

    rows: int = 0
    documents: dict[str, dict[str, Document]] = field(default_factory=dict)
    sources: dict[tuple[str, str], tuple[TableShape, Change]] = field(default_factory=dict)


async def _expected(
    shapes: list[TableShape], reader: TableReader, registry: Registry, *, sample: int | None,
    progress: TableProgress, name: str,
) -> Expected:
    """Every table's rows through the handlers into one sink: tables that write one index
    (shards) are compared, and scanned for orphans, as one."""
    sink = MemorySink()
    found = Expected(documents=sink.documents)
    for shape in shapes:
        if sample is None:
            async for chunk in reader.chunks(shape, chunk_size=READ_CHUNK):
                await _run(shape, chunk.changes, registry, sink, found)
                progress.update(name, found.rows, "read through the handlers")
        else:
            await _run(shape, await reader.sample(shape, sample), registry, sink, found)
    return found


async def _run(
    shape: TableShape, changes: list[Change], registry: Registry, sink: MemorySink,
    found: Expected,
) -> None:
    for change in changes:
        written = len(sink.actions)
        await apply(change, registry=registry, sink=sink)
        for action in sink.actions[written:]:
            found.sources[(str(action.get("_index")), str(action.get("_id")))] = (shape, change)
    found.rows += len(changes)


async def _compare(
    es: AsyncElasticsearch, expected: dict[str, dict[str, Document]], report: VerifyReport
) -> dict[tuple[str, str], int]:
    """Missing and different documents; returns the version each existing one had."""
    versions: dict[tuple[str, str], int] = {}
    for index, docs in expected.items():
        ids = list(docs)
        for start in range(0, len(ids), MGET_CHUNK):
            found = await es.mget(index=index, ids=ids[start:start + MGET_CHUNK])
            for item in found["docs"]:
                doc_id = item["_id"]
                if not item.get("found"):
                    report.differences.append(Difference("missing", index, doc_id))
                    continue
                versions[(index, doc_id)] = item["_version"]
                detail = first_difference(docs[doc_id], item["_source"])
                if detail:
                    report.differences.append(Difference("differs", index, doc_id, detail))
                else:
                    report.equal += 1
    return versions


async def _orphans(
    es: AsyncElasticsearch, expected: dict[str, dict[str, Document]]
) -> dict[tuple[str, str], tuple[int, int]]:
    """Documents of the handlers' indices that no row produces, with their seq_no/term."""
    found: dict[tuple[str, str], tuple[int, int]] = {}
    for index, docs in expected.items():
        async for hit in async_scan(es, index=index, query={"query": {"match_all": {}}},
                                    _source=False, seq_no_primary_term=True):
            if hit["_id"] not in docs:
                found[(index, hit["_id"])] = (hit["_seq_no"], hit["_primary_term"])
    return found


async def _repair(
    es: AsyncElasticsearch,
    expected: dict[str, dict[str, Document]],
    versions: dict[tuple[str, str], int],
    orphans: dict[tuple[str, str], tuple[int, int]],
    still_expected: dict[str, dict[str, Document]],
    report: VerifyReport,
    present: Callable[[tuple[str, str]], Awaitable[bool]],
) -> None:
    report.repaired = True
    for diff in report.differences:
        try:
            if diff.kind == "missing":
                await _write_missing(es, diff, expected[diff.index][diff.id], present)
                report.written += 1
            elif diff.kind == "differs":
                await es.index(index=diff.index, id=diff.id, document=expected[diff.index][diff.id],
                               version=versions[(diff.index, diff.id)],
                               version_type="external_gte")
                report.written += 1
            elif diff.id not in still_expected.get(diff.index, {}):
                seq_no, term = orphans[(diff.index, diff.id)]
                await es.delete(index=diff.index, id=diff.id, if_seq_no=seq_no,
                                if_primary_term=term)
                report.deleted += 1
        except (ConflictError, NotFoundError) as exc:  # the stream wrote meanwhile: it wins
            log.warning("not repaired %s: it changed since it was read (%s)", diff.line(),
                        type(exc).__name__)


async def _write_missing(
    es: AsyncElasticsearch,
    diff: Difference,
    document: Document,
    present: Callable[[tuple[str, str]], Awaitable[bool]],
) -> None:
    """Like a backfilled row (version 0: not over a recent tombstone); if a tombstone refuses
    it and the row is still in the table now, the index lost it: create it."""
    try:
        await es.index(index=diff.index, id=diff.id, document=document,
                       version=BACKFILL_VERSION, version_type="external")
    except ConflictError:
        if not await present((diff.index, diff.id)):
            raise  # deleted from the table since: the tombstone is right
        await es.create(index=diff.index, id=diff.id, document=document)


async def verify(
    settings: Settings,
    registry: Registry,
    pattern: str,
    *,
    sample: int | None = None,
    repair: bool = False,
    progress: TableProgress | None = None,
) -> list[VerifyReport]:
    """Verify (and repair) the tables `pattern` names, together: one report (tables that
    write one index, such as shards, each produce only part of it)."""
    es = make_elasticsearch(settings.elasticsearch, exact_reads=True)
    try:
        reader = await connect_reader(settings)
        async with reader:
            tables = await reader.tables(pattern)
            if not tables:
                raise BackfillError(f"no table matches {pattern!r} on {settings.mysql.host}")
            shapes = [await reader.describe(database, table) for database, table in tables]
            name = shapes[0].name if len(shapes) == 1 else f"{pattern} ({len(shapes)} tables)"
            return [await _verify_tables(es, reader, registry, shapes, name, sample=sample,
                                         repair=repair, progress=progress or NoProgress())]
    finally:
        await es.close()


async def _verify_tables(
    es: AsyncElasticsearch,
    reader: TableReader,
    registry: Registry,
    shapes: list[TableShape],
    name: str,
    *,
    sample: int | None,
    repair: bool,
    progress: TableProgress,
) -> VerifyReport:
    report = VerifyReport(name)
    progress.begin(name, await _total(reader, shapes, sample))
    found = await _expected(shapes, reader, registry, sample=sample, progress=progress,
                            name=name)
    progress.update(name, found.rows, "comparing with the index")
    report.rows, expected = found.rows, found.documents
    report.expected = sum(len(docs) for docs in expected.values())
    await _refresh(es, expected)
    versions = await _compare(es, expected, report)
    orphans: dict[tuple[str, str], tuple[int, int]] = {}
    if sample is None:
        orphans = await _orphans(es, expected)
        report.differences += [Difference("orphan", i, d) for i, d in sorted(orphans)]
    if repair and report.differences:
        still: dict[str, dict[str, Document]] = {}
        if orphans:  # a second read: an id a new row produces is not an orphan
            still = (await _expected(shapes, reader, registry, sample=None,
                                     progress=NoProgress(), name=name)).documents

        async def present(doc: tuple[str, str]) -> bool:
            return await reader.exists(*found.sources[doc])

        await _repair(es, expected, versions, orphans, still, report, present)
    progress.end(name)
    return report


async def _total(reader: TableReader, shapes: list[TableShape], sample: int | None) -> int | None:
    """The rows the tables will give, estimated (None if the server cannot say for one)."""
    if sample is not None:
        return sample * len(shapes)
    estimates = [await reader.estimate_rows(shape) for shape in shapes]
    return None if None in estimates else sum(e or 0 for e in estimates)


async def _refresh(es: AsyncElasticsearch, expected: Iterable[str]) -> None:
    """Make the latest writes visible to the scan (mget sees them anyway)."""
    names = ",".join(expected)
    if names:
        await es.indices.refresh(index=names, ignore_unavailable=True)
