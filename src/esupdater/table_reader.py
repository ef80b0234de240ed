"""Reading MySQL/MariaDB tables in primary-key order, typed as Canal's rows are.

What a backfill or a verify reads a table with; it writes nothing and holds no lock.

Contract:

- `TableReader.tables("shop.orders_*")` resolves a `database.table` glob (case-sensitive, as
  routing's `@on` globs) against information_schema's base tables (no views), in name order.
- `describe(database, table)` gives the columns in table order with their `COLUMN_TYPE`
  (`decimal(10,2)`, `tinyint(1)`, `enum('a','b')`: the strings Canal sends as `mysqlType`) and
  the primary key's columns in key order. A table without a primary key is refused
  (`TableReadError` naming it): without one, rows have no order to page by and no identity.
- `chunks(shape, chunk_size=..., where=...)` reads the rows in key order by keyset pagination
  (never OFFSET), one chunk per transaction `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ
  ONLY`. Each `Chunk` carries, from that same transaction, the binlog position its snapshot
  corresponds to (MariaDB's `binlog_snapshot_file/position`; None, logged once, on servers
  without it such as MySQL) and the server's clock just after the snapshot was taken.
- Every chunk is consistent by itself; chunks are not consistent with each other. A row
  inserted during the read with a key beyond the cursor is read by a later chunk; one inserted
  behind the cursor is not; a row changed after its chunk was read is read as it was. Replaying
  the binlog from each chunk's `snapshot` brings that chunk's rows up to date: that is what a
  safe backfill builds on.
- Each row is an `esupdater.change.Change`: type INSERT, `source="table"` (`is_backfill`),
  `row` typed by `esupdater.mysql_types` exactly as `CanalDecoder` types the same row from the
  binlog, `raw` the MySQL text of each value (None for NULL; BINARY/BLOB bytes one character
  per byte, ISO-8859-1; BIT as decimal digits, as Canal sends it), `executed_at` the chunk's
  snapshot time, `position` = `<database>.<table>` / partition -1 / offset = the row's number
  in the read (so `Change.version` is no binlog order: do not mix versioned writes with it).
- `where` is extra SQL pasted into the WHERE clause as it is: trusted operator input (a
  command-line option), never anything a user of the service supplies.

Keyset predicate: `k1 > %s OR (k1 = %s AND k2 > %s) OR ...` rather than the row comparison
`(k1, k2) > (%s, %s)`: MariaDB 10.11 does not turn a row comparison into a range, so each chunk
would scan the index from its start; the expanded form is an exact range scan (measured with
Handler_read_next). Key values are passed typed (int, Decimal, bytes), never as strings that
MySQL would compare to an integer column as doubles.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncmy
from asyncmy.converters import conversions

from esupdater.change import Change, Position
from esupdater.errors import EsupdaterError
from esupdater.mysql_types import (
    Converter,
    as_text,
    base_type,
    converter_for,
    float32_shortest,
)
from esupdater.settings import MySQLSettings

log = logging.getLogger(__name__)

#: Schemas of the server itself, never matched by a glob.
SYSTEM_SCHEMAS = frozenset({"information_schema", "mysql", "performance_schema", "sys"})
#: `Change.source` of the rows read here.
SOURCE = "table"
#: The partition of a table read's `Position` (Kafka partitions are never negative).
TABLE_PARTITION = -1
DEFAULT_CHUNK_SIZE = 1000
#: Canal writes TIMESTAMP values in its server's zone; the reader must read them in the same
#: one (the local stack's Canal runs in UTC).
DEFAULT_TIME_ZONE = "+00:00"

_INTEGERS = frozenset(
    {"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "bool", "boolean", "year"}
)
_DECIMALS = frozenset({"decimal", "numeric", "dec", "fixed"})
#: Values sent as parameters: MySQL compares an integer column with a string as doubles.
KeyValue = int | Decimal | bytes | str
#: Python values to SQL literals only: with no decoders, every value arrives as MySQL's text
#: (bytes for binary columns), which is what the shared typing rules take.
_ENCODERS_ONLY = {kind: encode for kind, encode in conversions.items() if not isinstance(kind, int)}


class TableReadError(EsupdaterError):
    """A table cannot be read as asked (no primary key, not found, a bad glob)."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    #: information_schema's COLUMN_TYPE: `bigint(20) unsigned`, `enum('a','b')`, ...
    column_type: str


@dataclass(frozen=True, slots=True)
class TableShape:
    """What reading a table needs to know about it, from information_schema."""

    database: str
    table: str
    columns: tuple[Column, ...]
    pk_names: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.database}.{self.table}"


@dataclass(frozen=True, slots=True)
class BinlogPosition:
    """A position in the server's binlog: replaying from it follows a snapshot."""

    file: str
    position: int

    def __str__(self) -> str:
        return f"{self.file}:{self.position}"


@dataclass(frozen=True, slots=True)
class Chunk:
    """One transaction's rows, in key order, and what its snapshot saw."""

    table: TableShape
    changes: list[Change]
    #: The key of the last row, as passed to the next chunk's query; None if no rows.
    last_key: tuple[KeyValue, ...] | None
    #: The binlog position the snapshot corresponds to; None when the server cannot say.
    snapshot: BinlogPosition | None
    #: The server's clock (UTC) in the chunk's transaction, just after its snapshot was taken.
    snapshot_time: datetime


def quote_name(name: str) -> str:
    """An identifier in backquotes, a backquote inside doubled, for a query with %s
    parameters (a `%` doubled too)."""
    return "`" + name.replace("`", "``").replace("%", "%%") + "`"


def keyset_predicate(pk_names: Sequence[str]) -> str:
    """The rows after a key, for key columns in order: `k1 > %s OR (k1 = %s AND k2 > %s)...`.

    Takes the parameters `keyset_params` gives.
    """
    if not pk_names:
        raise ValueError("a keyset needs at least one key column")
    names = [quote_name(name) for name in pk_names]
    terms = []
    for depth, name in enumerate(names):
        equal = [f"{prefix} = %s" for prefix in names[:depth]]
        terms.append(" AND ".join([*equal, f"{name} > %s"]))
    if len(terms) == 1:
        return terms[0]
    return " OR ".join(f"({term})" for term in terms)


def keyset_params(key: Sequence[KeyValue]) -> list[KeyValue]:
    """The parameters of `keyset_predicate` for the key of the last row read."""
    params: list[KeyValue] = []
    for depth in range(len(key)):
        params += key[: depth + 1]
    return params


def select_sql(
    shape: TableShape, *, after: bool, where: str | None = None
) -> str:
    """The query of one chunk: the columns in table order, the next rows in key order.

    A FLOAT is read as the DOUBLE it exactly is: MySQL's text of a FLOAT keeps 6 digits
    (`3.33333`), while Canal sends all the float's digits (`3.3333333`).
    """
    columns = ", ".join(
        f"CAST({quote_name(column.name)} AS DOUBLE)" if _is_float(column.column_type)
        else quote_name(column.name)
        for column in shape.columns
    )
    order = ", ".join(quote_name(name) for name in shape.pk_names)
    return (f"SELECT {columns} FROM {quote_name(shape.database)}.{quote_name(shape.table)}"
            f"{_where_sql(shape, after=after, where=where)} ORDER BY {order} LIMIT %s")


def estimate_sql(shape: TableShape, *, after: bool, where: str | None = None) -> str:
    """The optimizer's estimate of the rows left to read (EXPLAIN: no scan, no count)."""
    return (f"EXPLAIN SELECT 1 FROM {quote_name(shape.database)}.{quote_name(shape.table)}"
            f"{_where_sql(shape, after=after, where=where)}")


def _where_sql(shape: TableShape, *, after: bool, where: str | None) -> str:
    conditions = [f"({where.replace('%', '%%')})"] if where else []  # `%` is no parameter
    if after:
        conditions.append(f"({keyset_predicate(shape.pk_names)})")
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def match_tables(pattern: str, names: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (database, table) names a `database.table` glob matches, in name order."""
    if "." not in pattern:
        raise TableReadError(
            f"table pattern {pattern!r}: name tables as database.table (globs allowed, "
            "e.g. 'shop.orders_*')"
        )
    found = {
        (database, table)
        for database, table in names
        if database not in SYSTEM_SCHEMAS and fnmatch.fnmatchcase(f"{database}.{table}", pattern)
    }
    return sorted(found)


def shape_of(
    database: str, table: str, columns: Sequence[tuple[str, str]], pk_names: Sequence[str]
) -> TableShape:
    """A TableShape from information_schema's rows; refuses a table without a primary key."""
    if not columns:
        raise TableReadError(f"table {database}.{table} not found (or no privilege on it)")
    if not pk_names:
        raise TableReadError(
            f"table {database}.{table} has no primary key: its rows cannot be read in a "
            "stable order nor matched to documents; add a primary key"
        )
    return TableShape(database, table, tuple(Column(n, t) for n, t in columns), tuple(pk_names))


def _is_float(column_type: str) -> bool:
    return base_type(column_type) == "float"


def float32_text(text: str) -> str:
    """A FLOAT read as a DOUBLE (`3.3333332538604736`) -> the fewest digits that are the same
    single-precision float (`3.3333333`), the spelling its value gets (`as_float32`)."""
    return float32_shortest(float(text))


@dataclass(frozen=True, slots=True)
class _ColumnReading:
    """How one column's value, as the driver gives it, becomes raw text and a typed value."""

    name: str
    convert: Converter
    is_bit: bool
    is_float: bool
    key_param: Callable[[str], KeyValue]

    def text(self, value: str | bytes | None) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            return float32_text(value) if self.is_float else value
        if self.is_bit:  # MySQL sends a BIT's bytes; Canal its number: the number it is
            return str(int.from_bytes(value, "big"))
        return value.decode("latin-1")  # one character per byte, as Canal sends bytes


def _key_param(column_type: str, is_binary: bool) -> Callable[[str], KeyValue]:
    base = base_type(column_type)
    if base in _INTEGERS or base == "bit":
        return int
    if base in _DECIMALS:
        return Decimal
    if is_binary:
        return lambda text: text.encode("latin-1")
    return as_text


_BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})


def column_readings(shape: TableShape, tinyint1_as_bool: bool) -> tuple[_ColumnReading, ...]:
    return tuple(
        _ColumnReading(
            name=column.name,
            convert=converter_for(column.column_type, tinyint1_as_bool),
            is_bit=base_type(column.column_type) == "bit",
            is_float=_is_float(column.column_type),
            key_param=_key_param(column.column_type,
                                 base_type(column.column_type) in _BINARY_TYPES),
        )
        for column in shape.columns
    )


class TableReader:
    """Reads tables over one connection: see the module's contract."""

    def __init__(self, connection: asyncmy.Connection, *, tinyint1_as_bool: bool = False) -> None:
        self._connection = connection
        self._tinyint1_as_bool = tinyint1_as_bool
        self._no_position_logged = False

    @classmethod
    async def connect(
        cls,
        settings: MySQLSettings,
        *,
        tinyint1_as_bool: bool = False,
        time_zone: str = DEFAULT_TIME_ZONE,
    ) -> TableReader:
        """A reader on a new connection; `time_zone` must be Canal's (see DEFAULT_TIME_ZONE)."""
        context = None
        if settings.ssl_ca is not None:
            context = ssl.create_default_context(cafile=str(settings.ssl_ca))
        password = settings.password.get_secret_value() if settings.password else ""
        connection = await asyncmy.connect(
            host=settings.host, port=settings.port, user=settings.user, password=password,
            database=settings.database, charset="utf8mb4", conv=_ENCODERS_ONLY,
            binary_prefix=True, autocommit=True, ssl=context,
        )
        reader = cls(connection, tinyint1_as_bool=tinyint1_as_bool)
        try:
            # A consistent snapshot needs REPEATABLE READ whatever the server's default is.
            await reader._execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            await reader._execute("SET time_zone = %s", (time_zone,))
        except BaseException:
            await reader.close()
            raise
        return reader

    async def close(self) -> None:
        await self._connection.ensure_closed()

    async def __aenter__(self) -> TableReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._connection.cursor() as cursor:
            await cursor.execute(sql, tuple(params) if params else None)
            return list(await cursor.fetchall())

    async def tables(self, pattern: str) -> list[tuple[str, str]]:
        """The (database, table) base tables a `database.table` glob names, in name order."""
        rows = await self._execute(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
            "WHERE TABLE_TYPE = 'BASE TABLE'"
        )
        return match_tables(pattern, [(str(database), str(table)) for database, table in rows])

    async def describe(self, database: str, table: str) -> TableShape:
        """The table's columns, their types and its primary key, from information_schema."""
        columns = await self._execute(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        keys = await self._execute(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' "
            "ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        return shape_of(database, table, [(str(n), str(t)) for n, t in columns],
                        [str(name) for (name,) in keys])

    async def chunks(
        self,
        shape: TableShape,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        where: str | None = None,
        after: Sequence[KeyValue] | None = None,
    ) -> AsyncIterator[Chunk]:
        """The table's rows after `after` (from the start if None), chunk by chunk."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        key = None if after is None else tuple(after)
        row_number = 0
        while True:
            chunk = await self.read_chunk(
                shape, after=key, chunk_size=chunk_size, where=where, first_row=row_number
            )
            if not chunk.changes:
                return
            yield chunk
            row_number += len(chunk.changes)
            key = chunk.last_key
            if len(chunk.changes) < chunk_size:
                return

    async def read_chunk(
        self,
        shape: TableShape,
        *,
        after: Sequence[KeyValue] | None,
        chunk_size: int,
        where: str | None = None,
        first_row: int = 0,
    ) -> Chunk:
        """At most `chunk_size` rows after the key `after`, in one consistent snapshot."""
        sql = select_sql(shape, after=after is not None, where=where)
        params: list[Any] = [*keyset_params(after or ()), chunk_size]
        await self._execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        try:
            snapshot = await self._snapshot_position(shape)
            ((now,),) = await self._execute("SELECT UNIX_TIMESTAMP(NOW(6))")
            rows = await self._execute(sql, params)
        except BaseException:
            with contextlib.suppress(Exception):  # the error that got us here says more
                await self._execute("ROLLBACK")
            raise
        await self._execute("COMMIT")
        snapshot_time = datetime.fromtimestamp(float(Decimal(now)), tz=UTC)
        return self._chunk(shape, rows, snapshot, snapshot_time, first_row)

    async def estimate_rows(
        self, shape: TableShape, *, after: Sequence[KeyValue] | None = None,
        where: str | None = None,
    ) -> int | None:
        """About how many rows a read from `after` will give (for progress: InnoDB's
        statistics, off by tens of percent); None when the server gives no estimate."""
        params = keyset_params(after or ())
        try:
            async with self._connection.cursor() as cursor:
                await cursor.execute(estimate_sql(shape, after=after is not None, where=where),
                                     tuple(params) if params else None)
                names = [d[0].lower() for d in cursor.description or ()]
                plan = list(await cursor.fetchall())
        except asyncmy.errors.Error as exc:
            log.debug("%s: no row estimate (%s)", shape.name, exc)
            return None
        if "rows" not in names or not plan:
            return None
        rows = plan[0][names.index("rows")]
        return int(rows) if rows is not None and str(rows).isdigit() else None

    async def exists(self, shape: TableShape, change: Change) -> bool:
        """Whether the row `change` was read from is in the table now (by its key)."""
        readings = {r.name: r for r in column_readings(shape, self._tinyint1_as_bool)}
        params = [readings[name].key_param(change.raw.get(name) or "") for name in shape.pk_names]
        condition = " AND ".join(f"{quote_name(name)} = %s" for name in shape.pk_names)
        found = await self._execute(
            f"SELECT 1 FROM {quote_name(shape.database)}.{quote_name(shape.table)} "
            f"WHERE {condition} LIMIT 1", params)
        return bool(found)

    async def sample(self, shape: TableShape, rows: int) -> list[Change]:
        """`rows` rows picked at random (ORDER BY RAND(): a full scan; for spot checks)."""
        sql = select_sql(shape, after=False).replace(
            f"ORDER BY {', '.join(quote_name(n) for n in shape.pk_names)} LIMIT",
            "ORDER BY RAND() LIMIT")
        await self._execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        try:
            ((now,),) = await self._execute("SELECT UNIX_TIMESTAMP(NOW(6))")
            found = await self._execute(sql, [rows])
        finally:
            await self._execute("COMMIT")
        snapshot_time = datetime.fromtimestamp(float(Decimal(now)), tz=UTC)
        return self._chunk(shape, found, None, snapshot_time, 0).changes

    async def _snapshot_position(self, shape: TableShape) -> BinlogPosition | None:
        status = dict(await self._execute("SHOW STATUS LIKE 'binlog_snapshot_%'"))
        file = status.get("Binlog_snapshot_file") or ""
        position = status.get("Binlog_snapshot_position") or ""
        if file and str(position).isdigit():
            return BinlogPosition(str(file), int(position))
        if not self._no_position_logged:
            self._no_position_logged = True
            log.warning(
                "%s: the server gives no binlog position of a read's snapshot (MariaDB's "
                "binlog_snapshot_file/position; MySQL has none, or the binlog is off): "
                "chunks carry snapshot=None", shape.name,
            )
        return None

    def _chunk(
        self,
        shape: TableShape,
        rows: list[tuple[Any, ...]],
        snapshot: BinlogPosition | None,
        snapshot_time: datetime,
        first_row: int,
    ) -> Chunk:
        readings = column_readings(shape, self._tinyint1_as_bool)
        by_name = {reading.name: reading for reading in readings}
        key_readings = [by_name[name] for name in shape.pk_names]
        topic = shape.name
        changes: list[Change] = []
        last_raw: dict[str, str | None] = {}
        for number, values in enumerate(rows, start=first_row):
            raw: dict[str, str | None] = {}
            row: dict[str, Any] = {}
            for reading, value in zip(readings, values, strict=True):
                text = raw[reading.name] = reading.text(value)
                try:
                    row[reading.name] = None if text is None else reading.convert(text)
                except (ValueError, ArithmeticError) as exc:
                    raise TableReadError(
                        f"{topic}, row {number}: column {reading.name!r}: {text!r} is not a "
                        f"valid value ({exc})"
                    ) from exc
            changes.append(Change(
                database=shape.database, table=shape.table, type="INSERT", row=row, old=None,
                pk_names=shape.pk_names, raw=raw, executed_at=snapshot_time, sql="",
                position=Position(topic, TABLE_PARTITION, number), source=SOURCE,
            ))
            last_raw = raw
        last_key = None
        if changes:
            last_key = tuple(
                reading.key_param(last_raw[reading.name] or "") for reading in key_readings
            )
        return Chunk(shape, changes, last_key, snapshot, snapshot_time)
