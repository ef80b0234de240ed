"""Canal's flat JSON form (flatMessage=true): one table's rows per Kafka record."""

from __future__ import annotations

from datetime import datetime
from operator import itemgetter
from typing import Any, TypeVar

import orjson

from esupdater.canal.errors import CanalDecodeError
from esupdater.canal.events import (
    SKIPPED_TYPES,
    ddl_change,
    executed_at,
    is_statement_annotation,
    recent_times,
)
from esupdater.canal.values import RowTyper, TypeRow, converter_for
from esupdater.change import (
    DDL_TYPES,
    ROW_TYPES,
    Change,
    Position,
    previous_pk,
    row_change,
)
from esupdater.mysql_types import Converter

_T = TypeVar("_T")

_JSON_NAMES: dict[type, str] = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
}


def _json_keys(*names: str) -> tuple[str, ...]:
    """`names` as the str objects orjson gives for these keys: it keeps one per key it has
    seen, so a lookup with them matches by identity instead of comparing the text (a speed-up
    only: any other str with the same text finds the same value)."""
    return tuple(orjson.loads(orjson.dumps(dict.fromkeys(names))))


#: A FlatMessage's header fields, in one call; `data` last.
_header = itemgetter(*_json_keys("database", "table", "type", "isDdl", "es", "pkNames", "sql",
                                 "data"))

_MYSQL_TYPE, _SQL_TYPE, _OLD = _json_keys("mysqlType", "sqlType", "old")

#: `Change.changed` of a row that is not an UPDATE's: one shared empty set, not one per row.
_NO_COLUMNS: frozenset[str] = frozenset()


def decode_flat(value: bytes, position: Position, tinyint1_as_bool: bool) -> list[Change]:
    """One Change per row of a FlatMessage, or one for its DDL statement."""
    try:
        message = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise CanalDecodeError(position, f"bad JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise CanalDecodeError(
            position, f"not a Canal flat message: JSON {_kind(message)}, not an object"
        )
    try:
        database, table, type_, is_ddl, es_ms, pk_list, sql, data = _header(message)
    except KeyError:  # a field is missing: the checks one by one below say which
        database = None
    # type() rather than isinstance(): JSON true must not pass as the integer 1.
    if not (
        type(database) is str and type(table) is str and type(type_) is str
        and (is_ddl is None or type(is_ddl) is bool) and (es_ms is None or type(es_ms) is int)
        and (pk_list is None or type(pk_list) is list) and (sql is None or type(sql) is str)
    ):  # one of them is wrong: the checks one by one say which
        database = _required(message, "database", str, position)
        table = _required(message, "table", str, position)
        type_ = _required(message, "type", str, position)
        is_ddl = _optional(message, "isDdl", bool, position)
        es_ms = _optional(message, "es", int, position)
        pk_list = _optional(message, "pkNames", list, position)
        sql = _optional(message, "sql", str, position)
        data = message.get("data")
    # Both are usually the last record's: looked up here, not converted or checked again.
    when = recent_times.get(es_ms or 0) or executed_at(es_ms, position)
    last_pk = _last_pk  # one read: another thread may replace it meanwhile
    pk_names = last_pk[1] if pk_list == last_pk[0] else _pk_names(pk_list, position)
    if is_ddl or type_ not in ROW_TYPES:
        return _other_event(message, database, table, type_, is_ddl or False, sql or "",
                            pk_names, when, position)
    if type(data) is not list:
        data = _optional(message, "data", list, position)
    if not data:
        return []
    type_row, type_old = _typer(message, database, table, position, tinyint1_as_bool)
    olds = _olds(message, len(data), position) if type_ == "UPDATE" else None
    changes = []
    for index, raw in enumerate(data):
        if type(raw) is not dict:
            raise CanalDecodeError(position, f"data[{index}] must be an object, got {_kind(raw)}")
        row = type_row(raw, position)  # first: it checks that every value is a string or null
        old = None
        old_pk = None
        changed = _NO_COLUMNS
        if olds is not None:
            raw_old = olds[index]
            if type(raw_old) is not dict:
                raise CanalDecodeError(
                    position, f"old[{index}] must be an object, got {_kind(raw_old)}"
                )
            old = type_old(raw_old, position)
            changed = frozenset(raw_old)
            old_pk = previous_pk(pk_names, raw, raw_old)
        changes.append(row_change(database, table, type_, row, old, pk_names, raw, when,
                                  position, index, changed, old_pk))
    return changes


def _other_event(
    message: dict[str, Any], database: str, table: str, type_: str, is_ddl: bool, sql: str,
    pk_names: tuple[str, ...], when: datetime | None, position: Position,
) -> list[Change]:
    """A message that is not an INSERT, UPDATE or DELETE: a statement text, a DDL statement,
    an event that carries nothing, or one that is not Canal's."""
    if is_statement_annotation(type_, is_ddl):
        return []
    if is_ddl or type_ in DDL_TYPES:
        return [ddl_change(database, table, type_, sql, pk_names, when, position, 0)]
    data = _optional(message, "data", list, position)
    if not data or type_ in SKIPPED_TYPES:
        return []
    raise CanalDecodeError(position, f"unknown event type {type_!r} for rows")


def _olds(message: dict[str, Any], rows: int, position: Position) -> list[Any]:
    """An UPDATE's old values, one entry per row; none sent is no column changed."""
    olds = message.get(_OLD)
    if not olds or type(olds) is not list:
        olds = _optional(message, _OLD, list, position) or [{}] * rows
    if len(olds) != rows:
        raise CanalDecodeError(position, f"field 'old' has {len(olds)} entries for {rows} rows")
    return olds


def _pk_names(pk_list: list[Any] | None, position: Position) -> tuple[str, ...]:
    """`pkNames` as a tuple of strings, kept for the next record (a table's records repeat it)."""
    global _last_pk
    pk_names = tuple(_strings(pk_list, position)) if pk_list else ()
    _last_pk = (pk_list, pk_names)
    return pk_names


#: The last `pkNames` and its tuple: a list equal to a checked list of strings is one too.
_last_pk: tuple[list[str] | None, tuple[str, ...]] = (None, ())

#: Row typers per (database, table), each with the column types it was built from: one
#: table's messages share them, so the converters are looked up and the typer compiled once
#: per schema rather than once per message. Checked by comparing the message's type maps
#: with the kept ones; a table whose types change gets new typers. One map per
#: `tinyint1_as_bool`.
_typers: tuple[dict[tuple[str, str], tuple[Any, Any, tuple[TypeRow, TypeRow]]], ...] = ({}, {})
_MAX_TYPERS = 4096  # tables kept; beyond that, start again


def _typer(
    message: dict[str, Any], database: str, table: str, position: Position,
    tinyint1_as_bool: bool,
) -> tuple[TypeRow, TypeRow]:
    """The typers of a message's rows, and of an UPDATE's old values (a few columns each)."""
    mysql_types = message.get(_MYSQL_TYPE)
    sql_types = message.get(_SQL_TYPE)
    kept = _typers[tinyint1_as_bool]
    key = (database, table)
    found = kept.get(key)
    if found is not None and found[0] == mysql_types and found[1] == sql_types:
        return found[2]
    typer = RowTyper(_converters(message, position, tinyint1_as_bool), position)
    typers = (typer.compiled(), typer.typed)
    if len(kept) >= _MAX_TYPERS:
        kept.clear()
    kept[key] = (mysql_types, sql_types, typers)
    return typers


def _converters(
    message: dict[str, Any], position: Position, tinyint1_as_bool: bool
) -> dict[str, Converter]:
    mysql_types = _optional(message, "mysqlType", dict, position) or {}
    sql_types = _optional(message, "sqlType", dict, position) or {}
    converters = {}
    for name in {**sql_types, **mysql_types}:
        mysql_type = mysql_types.get(name)
        sql_type = sql_types.get(name)
        if mysql_type is not None and type(mysql_type) is not str:
            raise CanalDecodeError(position, f"mysqlType of {name!r} must be a string")
        if sql_type is not None and type(sql_type) is not int:
            raise CanalDecodeError(position, f"sqlType of {name!r} must be an integer")
        converters[name] = converter_for(mysql_type, sql_type, tinyint1_as_bool)
    return converters


def _required(message: dict[str, Any], name: str, kind: type[_T], position: Position) -> _T:
    if name not in message:
        raise CanalDecodeError(position, f"not a Canal flat message: missing field {name!r}")
    found = _optional(message, name, kind, position)
    if found is None:
        raise CanalDecodeError(position, f"field {name!r} must not be null")
    return found


def _optional(
    message: dict[str, Any], name: str, kind: type[_T], position: Position
) -> _T | None:
    found = message.get(name)
    # type() rather than isinstance(): JSON true must not pass as the integer 1.
    if found is None or type(found) is kind:
        return found
    raise CanalDecodeError(
        position, f"field {name!r} must be {_JSON_NAMES[kind]} or null, got {_kind(found)}"
    )


def _strings(items: list[Any], position: Position) -> list[str]:
    for item in items:
        if type(item) is not str:
            raise CanalDecodeError(position, f"pkNames must hold strings, got {_kind(item)}")
    return items


def _kind(value: object) -> str:
    return _JSON_NAMES.get(type(value), "null" if value is None else type(value).__name__)
