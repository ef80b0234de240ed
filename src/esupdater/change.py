"""One row change, as handlers see it: Canal's message split into rows and typed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Row-level types Canal reports; everything else (ALTER, CREATE, ERASE, ...) is DDL.
ROW_TYPES = frozenset({"INSERT", "UPDATE", "DELETE"})

#: Composite primary keys are joined with this to form `Change.pk`.
PK_SEPARATOR = ":"


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record came from in Kafka: enough to find it again with any Kafka tool."""

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
    def is_insert(self) -> bool:
        return self.type == "INSERT"

    @property
    def is_update(self) -> bool:
        return self.type == "UPDATE"

    @property
    def is_delete(self) -> bool:
        return self.type == "DELETE"

    @property
    def pk(self) -> str:
        """The primary key as a string; composite keys joined with `PK_SEPARATOR`.

        Empty for DDL and for tables without a primary key.
        """
        parts = []
        for name in self.pk_names:
            value = self.raw.get(name)
            parts.append("" if value is None else value)
        return PK_SEPARATOR.join(parts)

    @property
    def key(self) -> tuple[str, str, str]:
        """What per-document ordering is keyed on: (database, table, pk)."""
        return (self.database, self.table, self.pk)
