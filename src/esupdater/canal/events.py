"""What both Canal forms share: which event types carry nothing, statement texts, and time."""

from __future__ import annotations

from datetime import UTC, datetime

from esupdater.canal.errors import CanalDecodeError
from esupdater.change import Change, Position

#: Canal event types with nothing for a handler: GTID markers, XA ends, master heartbeats.
SKIPPED_TYPES = frozenset({"GTID", "XACOMMIT", "XAROLLBACK", "MHEARTBEAT"})


def is_statement_annotation(type_: str, is_ddl: bool) -> bool:
    """A QUERY that is not DDL: the text of a DML statement whose rows follow separately.

    MariaDB logs it by default (binlog_annotate_row_events), MySQL with
    binlog_rows_query_log_events; Canal publishes it with no database or table. The rows
    are what counts, so it is skipped, never routed as a schema change.
    """
    return type_ == "QUERY" and not is_ddl

_MS_PER_S = 1000


def executed_at(es_ms: int | None, position: Position) -> datetime | None:
    """Canal's `es` / executeTime (ms since the epoch) as an aware UTC datetime; 0 means unknown."""
    if not es_ms:
        return None
    when = recent_times.get(es_ms)
    if when is None:
        try:
            when = datetime.fromtimestamp(es_ms / _MS_PER_S, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise CanalDecodeError(position, f"execution time {es_ms} ms is out of range") from exc
        if len(recent_times) >= _RECENT_TIMES:
            recent_times.clear()
        recent_times[es_ms] = when
    return when


#: Execution times converted lately, by ms: the records of one transaction, or of one
#: millisecond, share one datetime (immutable). A decoder may look here first: a hit costs
#: no call.
recent_times: dict[int, datetime] = {}
_RECENT_TIMES = 1024


def ddl_change(
    database: str,
    table: str,
    type_: str,
    sql: str,
    pk_names: tuple[str, ...],
    when: datetime | None,
    position: Position,
    row_index: int,
) -> Change:
    """ONE Change for a DDL statement: no row, the statement in `sql`."""
    return Change(
        database=database,
        table=table,
        type=type_,
        row={},
        old=None,
        pk_names=pk_names,
        raw={},
        executed_at=when,
        sql=sql,
        position=position,
        row_index=row_index,
        is_ddl=True,
    )
