"""One row change, as handlers see it: Canal's message split into rows and typed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Row-level change types; each Change of one carries a row.
ROW_TYPES = frozenset({"INSERT", "UPDATE", "DELETE"})
#: Statement-level (DDL) change types: a Change of one carries `sql`, no row. Handlers get
#: them only by asking (`types={"DDL"}` or by name), and each is a barrier for its table.
DDL_TYPES = frozenset(
    {"ALTER", "CREATE", "ERASE", "TRUNCATE", "RENAME", "CINDEX", "DINDEX", "QUERY"}
)

#: Composite primary keys are joined with this to form `Change.pk`.
PK_SEPARATOR = ":"
#: Inside a composite key's values, precedes a literal PK_SEPARATOR or PK_ESCAPE, so that no
#: two keys share a `pk` (`("1:2", "3")` gives `1\:2:3`, `("1", "2:3")` gives `1:2\:3`).
PK_ESCAPE = "\\"
#: `Change.version` = offset * VERSION_ROWS_PER_RECORD + row_index + 1.
VERSION_ROWS_PER_RECORD = 1 << 20
#: A backfilled row's version: lower than every streamed change's (docs/backfill.md).
BACKFILL_VERSION = 0


@dataclass(slots=True, unsafe_hash=True)
class Position:
    """Where a record came from in Kafka: enough to find it again with any Kafka tool. Treat
    it as read-only: it is not frozen because one is built per record on the hot path, and a
    frozen __init__ costs three times more (760 against 220 ns)."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}@{self.offset}"


@dataclass(slots=True)
class Change:
    """ONE row change (or one DDL statement) from the binlog. Treat it as read-only.

    Not a frozen dataclass on purpose: one is built per row on the hot path, and a frozen
    __init__ costs several times more.

    `row` is the after-image (the before-image for DELETE), typed from Canal's mysqlType;
    `old` holds the previous values of the changed columns (UPDATE only); `raw` keeps
    Canal's untouched strings of the row.
    """

    database: str
    table: str
    type: str
    row: dict[str, Any]
    old: dict[str, Any] | None
    pk_names: tuple[str, ...]
    raw: dict[str, str | None]
    executed_at: datetime | None
    sql: str
    position: Position
    #: Index of this row inside its Kafka record (a record may carry many rows).
    row_index: int = 0
    is_ddl: bool = False
    changed: frozenset[str] = field(default_factory=frozenset)
    #: The primary key before this UPDATE when it changed it, else None: the document
    #: stored under that key is now stale (see `previous_pk`).
    old_pk: str | None = None
    #: Where the row came from: "binlog" (a change Canal published), or "table" for a row
    #: read from the table itself (esupdater.table_reader: an INSERT of the row as it is,
    #: `position` = `<database>.<table>`, partition -1, offset = the row's number in the read).
    source: str = "binlog"
    #: The primary key as a string: Canal's string of a one-column key as it is; the values
    #: of a composite key joined with `PK_SEPARATOR`, escaped (see `join_pk`). Empty for DDL
    #: and for tables without a primary key.
    pk: str = field(init=False, compare=False, repr=False)
    #: `type` is INSERT, UPDATE, DELETE. These four are attributes, not properties, because
    #: every row asks for them: a property is a call from C, about 1 µs on the hot path.
    is_insert: bool = field(init=False, compare=False, repr=False)
    is_update: bool = field(init=False, compare=False, repr=False)
    is_delete: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.pk = join_pk(self.pk_names, self.raw)
        type_ = self.type
        self.is_insert = type_ == "INSERT"
        self.is_update = type_ == "UPDATE"
        self.is_delete = type_ == "DELETE"

    @property
    def topic(self) -> str:
        return self.position.topic

    @property
    def partition(self) -> int:
        return self.position.partition

    @property
    def offset(self) -> int:
        return self.position.offset

    @property
    def version(self) -> int:
        """A number that grows with binlog order within this partition, for versioned writes.

        `ctx.index(..., version=change.version)` makes Elasticsearch refuse a write older than
        what the document holds (a late request from a previous owner of the partition after
        a rebalance). Comparable only between changes of one topic partition: use it for
        documents written from one table whose rows Canal partitions by primary key.

        It starts at 1: version 0 is a backfilled row's (`is_backfill`), which any streamed
        write replaces and which replaces nothing (docs/backfill.md).
        """
        if self.source == "table":
            return BACKFILL_VERSION
        if self.row_index >= VERSION_ROWS_PER_RECORD:
            raise ValueError(
                f"{self.position}: row {self.row_index} is past {VERSION_ROWS_PER_RECORD} rows "
                "per record; Change.version cannot order it"
            )
        return self.position.offset * VERSION_ROWS_PER_RECORD + self.row_index + 1

    @property
    def is_backfill(self) -> bool:
        """A row read from the table (`source == "table"`), not a change from the binlog."""
        return self.source == "table"

    @property
    def key(self) -> tuple[str, str, str]:
        """What per-document ordering is keyed on: (database, table, pk)."""
        return (self.database, self.table, self.pk)

    @property
    def old_key(self) -> tuple[str, str, str] | None:
        """`key` before an UPDATE that changed the primary key (see `old_pk`), else None."""
        return None if self.old_pk is None else (self.database, self.table, self.old_pk)


_new = object.__new__


def row_change(
    database: str, table: str, type_: str, row: dict[str, Any], old: dict[str, Any] | None,
    pk_names: tuple[str, ...], raw: dict[str, str | None], executed_at: datetime | None,
    position: Position, row_index: int, changed: frozenset[str], old_pk: str | None,
) -> Change:
    """`Change(...)` of a binlog row (no DDL, `sql` empty), as a decoder builds one per row:
    the same object, made without the dataclass's `__init__`, which Python calls from C
    (about 1 µs a row). `raw` must hold only strings and None."""
    change: Change = _new(Change)
    change.database = database
    change.table = table
    change.type = type_
    change.row = row
    change.old = old
    change.pk_names = pk_names
    change.raw = raw
    change.executed_at = executed_at
    change.sql = ""
    change.position = position
    change.row_index = row_index
    change.is_ddl = False
    change.changed = changed
    change.old_pk = old_pk
    change.source = "binlog"
    # join_pk's one-column case inlined
    change.pk = (raw.get(pk_names[0]) or "") if len(pk_names) == 1 else join_pk(pk_names, raw)
    change.is_insert = type_ == "INSERT"
    change.is_update = type_ == "UPDATE"
    change.is_delete = type_ == "DELETE"
    return change


def new_position(topic: str, partition: int, offset: int) -> Position:
    """`Position(topic, partition, offset)` without the dataclass's `__init__` (one per
    record on the hot path; see `row_change`)."""
    position: Position = _new(Position)
    position.topic = topic
    position.partition = partition
    position.offset = offset
    return position


def join_pk(pk_names: tuple[str, ...], raw: Mapping[str, str | None]) -> str:
    """Canal's strings of the key columns as one string: what `Change.pk` is.

    A one-column key is Canal's string untouched. A composite key's values are joined with
    `PK_SEPARATOR`, each value's `PK_ESCAPE` and `PK_SEPARATOR` preceded by `PK_ESCAPE`: then
    different keys never share a string (`split_pk` gives the values back), and keys
    without either character read as they always did (`7:3`).
    """
    if len(pk_names) == 1:  # the usual case, on the hot path: no generator, no join
        return raw.get(pk_names[0]) or ""
    return PK_SEPARATOR.join(_escaped(raw.get(name) or "") for name in pk_names)


def _escaped(value: str) -> str:
    if PK_ESCAPE in value or PK_SEPARATOR in value:
        value = value.replace(PK_ESCAPE, PK_ESCAPE + PK_ESCAPE)
        return value.replace(PK_SEPARATOR, PK_ESCAPE + PK_SEPARATOR)
    return value


def split_pk(pk: str, columns: int) -> tuple[str, ...]:
    """The values of a key `join_pk` made of `columns` key columns (NULL comes back as "")."""
    if columns <= 1:
        return (pk,) if columns == 1 else ()
    values: list[str] = []
    current: list[str] = []
    chars = iter(pk)
    for char in chars:
        if char == PK_ESCAPE:
            current.append(next(chars, ""))
        elif char == PK_SEPARATOR:
            values.append("".join(current))
            current = []
        else:
            current.append(char)
    values.append("".join(current))
    if len(values) != columns:
        raise ValueError(f"key {pk!r} holds {len(values)} values, not {columns}")
    return tuple(values)


def previous_pk(
    pk_names: tuple[str, ...], raw: Mapping[str, str | None], raw_old: Mapping[str, str | None]
) -> str | None:
    """The key before an UPDATE, from Canal's strings, when the UPDATE changed it; else None.

    `raw` and `raw_old` must hold only strings and None (the decoders check that first).
    """
    for name in pk_names:  # a loop, not any(): this runs for every UPDATE row
        if name in raw_old:
            break
    else:
        return None
    return join_pk(pk_names, {**raw, **raw_old})
