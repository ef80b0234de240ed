"""Canal's flat JSON form (flatMessage=true): one table's rows per Kafka record."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson

from esupdater.canal.errors import CanalDecodeError
from esupdater.canal.events import (
    SKIPPED_TYPES,
    ddl_change,
    executed_at,
    is_statement_annotation,
)
from esupdater.canal.values import RowTyper, converter_for
from esupdater.change import DDL_TYPES, ROW_TYPES, Change, Position, previous_pk
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
    get = message.get
    database, table, type_ = get("database"), get("table"), get("type")
    is_ddl, es_ms, pk_list, sql = get("isDdl"), get("es"), get("pkNames"), get("sql")
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
    is_ddl = is_ddl or False
    sql = sql or ""
    when = executed_at(es_ms, position)
    pk_names = tuple(_strings(pk_list, position)) if pk_list else ()
    if is_statement_annotation(type_, is_ddl):
        return []
    if is_ddl or type_ in DDL_TYPES:
        return [ddl_change(database, table, type_, sql, pk_names, when, position, 0)]
    data = _optional(message, "data", list, position)
    if not data or type_ in SKIPPED_TYPES:
        return []
    if type_ not in ROW_TYPES:
        raise CanalDecodeError(position, f"unknown event type {type_!r} for rows")
    typer = _typer(message, database, table, position, tinyint1_as_bool)
    olds: list[Any] = []
    if type_ == "UPDATE":
        olds = _optional(message, "old", list, position) or [{}] * len(data)
        if len(olds) != len(data):
            raise CanalDecodeError(
                position, f"field 'old' has {len(olds)} entries for {len(data)} rows"
            )
    changes = []
    for index, raw in enumerate(data):
        if not isinstance(raw, dict):
            raise CanalDecodeError(position, f"data[{index}] must be an object, got {_kind(raw)}")
        row = typer(raw)  # first: it checks that every value is a string or null
        old = None
        old_pk = None
        changed = _NO_COLUMNS
        if olds:
            raw_old = olds[index]
            if not isinstance(raw_old, dict):
                raise CanalDecodeError(
                    position, f"old[{index}] must be an object, got {_kind(raw_old)}"
                )
            old = typer(raw_old)
            changed = frozenset(raw_old)
            old_pk = previous_pk(pk_names, raw, raw_old)
        # Positional, in Change's field order: one is built per row.
        changes.append(Change(database, table, type_, row, old, pk_names, raw, when, "",
                              position, index, False, changed, old_pk))
    return changes


#: Row typers per table (database NUL table), each with the column types it was built
#: from: one table's messages share them, so the converters are looked up once per schema
#: rather than once per message. Checked by comparing the message's type maps with the
#: kept ones (no key built per message); a table whose types change gets a new typer.
#: One map per `tinyint1_as_bool`.
_typers: tuple[dict[str, tuple[Any, Any, RowTyper]], ...] = ({}, {})
_MAX_TYPERS = 4096  # tables kept; beyond that, start again


def _typer(
    message: dict[str, Any], database: str, table: str, position: Position,
    tinyint1_as_bool: bool,
) -> RowTyper:
    mysql_types = message.get("mysqlType")
    sql_types = message.get("sqlType")
    kept = _typers[tinyint1_as_bool]
    key = database + "\0" + table  # NUL: never inside a MySQL identifier
    found = kept.get(key)
    if found is not None and found[0] == mysql_types and found[1] == sql_types:
        return found[2].at(position)
    typer = RowTyper(_converters(message, position, tinyint1_as_bool), position)
    if len(kept) >= _MAX_TYPERS:
        kept.clear()
    kept[key] = (mysql_types, sql_types, typer)
    return typer


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
