"""Realistic Canal bytes for tests, the demo and the benchmark, in both of Canal's forms.

`flat_message` is what Canal's Kafka producer sends with flatMessage=true (a FlatMessage as
JSON, keys in fastjson's alphabetical order, nulls written); `protobuf_message` is what it
sends with flatMessage=false under the default `canal.instance.memory.rawEntry=true`: a
Packet{type=MESSAGES, body=Messages{batch_id, messages=[Entry, ...]}} without a version.
Rows are dicts of already-stringified values (None for NULL), as Canal has them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Literal

import orjson

from esupdater.canal import canal_pb2 as pb
from esupdater.canal.values import base_type

#: One row: column name -> Canal's string of the value, None for NULL.
Row = Mapping[str, str | None]

#: java.sql.Types Canal reports per MySQL type (its RowsLogBuffer / LogEventConvert).
_SQL_TYPES = {
    **dict.fromkeys(("tinyint", "bool", "boolean"), -6),
    "smallint": 5,
    **dict.fromkeys(("mediumint", "int", "integer", "enum"), 4),
    "bigint": -5,
    **dict.fromkeys(("decimal", "numeric", "dec", "fixed"), 3),
    "float": 7,
    **dict.fromkeys(("double", "real"), 8),
    **dict.fromkeys(("bit", "set"), -7),
    **dict.fromkeys(("datetime", "timestamp"), 93),
    "date": 91,
    "time": 92,
    **dict.fromkeys(("year", "varchar", "json"), 12),
    "char": 1,
    **dict.fromkeys(("tinytext", "text", "mediumtext", "longtext"), 2005),
    **dict.fromkeys(("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"), 2004),
}
_VARCHAR = 12

_BEFORE_TAG = b"\x0a"  # RowData.beforeColumns, field 1, length-delimited
_AFTER_TAG = b"\x12"  # RowData.afterColumns, field 2
_ROW_DATA_TAG = b"\x62"  # RowChange.rowDatas, field 12
_VALUE_TAG = b"\x42"  # Column.value, field 8
_LOGFILE = "mysql-bin.000001"
_SERVER_ID = 1


def sql_type_for(mysql_type: str) -> int:
    """The java.sql.Types number Canal would report for a MySQL column type."""
    return _SQL_TYPES.get(base_type(mysql_type), _VARCHAR)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def flat_message(
    database: str,
    table: str,
    type: str,
    rows: Sequence[Row],
    *,
    old: Sequence[Row] | None = None,
    pk_names: Sequence[str] = ("id",),
    mysql_types: Mapping[str, str],
    sql_types: Mapping[str, int] | None = None,
    es_ms: int | None = None,
    id: int = 1,
    is_ddl: bool = False,
    sql: str = "",
) -> bytes:
    """One FlatMessage as Canal's Kafka producer writes it with flatMessage=true."""
    now = _now_ms()
    if sql_types is None:
        sql_types = {name: sql_type_for(kind) for name, kind in mysql_types.items()}
    rowless = is_ddl or not rows
    return orjson.dumps(
        {
            "data": None if rowless else list(rows),
            "database": database,
            "es": now if es_ms is None else es_ms,
            "gtid": "",
            "id": id,
            "isDdl": is_ddl,
            "mysqlType": None if rowless else dict(mysql_types),
            "old": list(old) if old and not is_ddl else None,
            "pkNames": list(pk_names) if pk_names and not is_ddl else None,
            "sql": sql,
            "sqlType": None if rowless else dict(sql_types),
            "table": table,
            "ts": now,
            "type": type,
        },
        default=dict,  # rows given as other Mappings
    )


def protobuf_message(
    database: str,
    table: str,
    type: str,
    rows: Sequence[Row],
    *,
    old: Sequence[Row] | None = None,
    pk_names: Sequence[str] = ("id",),
    mysql_types: Mapping[str, str],
    sql_types: Mapping[str, int] | None = None,
    es_ms: int | None = None,
    id: int = 1,
    is_ddl: bool = False,
    sql: str = "",
    transaction: bool = False,
) -> bytes:
    """One Kafka record as Canal sends it with flatMessage=false: a batch of one row entry.

    With `transaction`, the entry is wrapped in TRANSACTIONBEGIN / TRANSACTIONEND entries, as
    Canal's default raw mode sends them (filterTransactionEntry does not apply there).
    """
    entry = protobuf_row_entry(
        database, table, type, rows, old=old, pk_names=pk_names, mysql_types=mysql_types,
        sql_types=sql_types, es_ms=es_ms, is_ddl=is_ddl, sql=sql,
    )  # fmt: skip
    if transaction:
        entries = [
            protobuf_transaction_entry("begin", es_ms=es_ms),
            entry,
            protobuf_transaction_entry("end", es_ms=es_ms),
        ]
        return protobuf_packet(entries, batch_id=id)
    return protobuf_packet([entry], batch_id=id)


def protobuf_packet(
    entries: Sequence[bytes], *, batch_id: int = 1, version: int | None = None
) -> bytes:
    """Entries (serialized Entry messages) as one Kafka record.

    Canal's raw path (the default) writes no version; pass `version=1` for what its
    partitionHash path writes.
    """
    body = pb.Messages(batch_id=batch_id, messages=entries).SerializeToString()
    packet = pb.Packet(type=pb.Packet.MESSAGES, body=body)
    if version is not None:
        packet.version = version
    return packet.SerializeToString()


def protobuf_row_entry(
    database: str,
    table: str,
    type: str,
    rows: Sequence[Row],
    *,
    old: Sequence[Row] | None = None,
    pk_names: Sequence[str] = ("id",),
    mysql_types: Mapping[str, str],
    sql_types: Mapping[str, int] | None = None,
    es_ms: int | None = None,
    is_ddl: bool = False,
    sql: str = "",
) -> bytes:
    """One ROWDATA Entry: header plus a RowChange holding every row."""
    event = pb.EventType.Value(type)
    change = pb.RowChange(tableId=1, eventType=event, isDdl=is_ddl, sql=sql).SerializeToString()
    if not is_ddl:
        keys = frozenset(pk_names)
        kinds = {name: _kind(name, mysql_types, sql_types) for name in mysql_types}
        parts = [change]
        for index, row in enumerate(rows):
            row_old = old[index] if old is not None and index < len(old) else None
            data = _row_data(type, row, row_old, keys, kinds)
            parts += (_ROW_DATA_TAG, _varint(len(data)), data)
        change = b"".join(parts)
    return pb.Entry(
        header=_header(database, table, event, es_ms),
        entryType=pb.ROWDATA,
        storeValue=change,
    ).SerializeToString()


def protobuf_transaction_entry(
    kind: Literal["begin", "end"] = "begin", *, es_ms: int | None = None, transaction_id: str = "1"
) -> bytes:
    """A TRANSACTIONBEGIN or TRANSACTIONEND entry, which carries no rows."""
    header = _header("", "", None, es_ms)
    if kind == "begin":
        entry_type = pb.TRANSACTIONBEGIN
        store = pb.TransactionBegin(threadId=1).SerializeToString()
    else:
        entry_type = pb.TRANSACTIONEND
        store = pb.TransactionEnd(transactionId=transaction_id).SerializeToString()
    return pb.Entry(header=header, entryType=entry_type, storeValue=store).SerializeToString()


def protobuf_heartbeat_entry(*, es_ms: int | None = None) -> bytes:
    """A HEARTBEAT entry (Canal's master heartbeat), which carries no rows."""
    header = _header("", "", pb.MHEARTBEAT, es_ms)
    return pb.Entry(header=header, entryType=pb.HEARTBEAT).SerializeToString()


def _header(
    database: str, table: str, event: pb.EventType.ValueType | None, es_ms: int | None
) -> pb.Header:
    header = pb.Header(
        version=1,
        logfileName=_LOGFILE,
        logfileOffset=4,
        serverId=_SERVER_ID,
        serverenCode="UTF-8",
        executeTime=_now_ms() if es_ms is None else es_ms,
        sourceType=pb.MYSQL,
        schemaName=database,
        tableName=table,
    )
    if event is not None:
        header.eventType = event
    return header


def _kind(
    name: str, mysql_types: Mapping[str, str], sql_types: Mapping[str, int] | None
) -> tuple[str, int]:
    mysql_type = mysql_types[name]
    sql_type = sql_types[name] if sql_types and name in sql_types else sql_type_for(mysql_type)
    return mysql_type, sql_type


def _row_data(
    type_: str,
    row: Row,
    row_old: Row | None,
    keys: frozenset[str],
    kinds: dict[str, tuple[str, int]],
) -> bytes:
    """RowData as Canal fills it: INSERT after-image, DELETE before-image, UPDATE both."""
    parts: list[bytes] = []
    if type_ == "UPDATE":
        changed = row_old or {}
        before = {name: changed.get(name, value) for name, value in row.items()}
        parts += _columns(_BEFORE_TAG, before, keys, kinds, None)
        parts += _columns(_AFTER_TAG, row, keys, kinds, frozenset(changed))
    elif type_ == "DELETE":
        parts += _columns(_BEFORE_TAG, row, keys, kinds, None)
    else:
        parts += _columns(_AFTER_TAG, row, keys, kinds, frozenset(row))
    return b"".join(parts)


def _columns(
    tag: bytes,
    row: Row,
    keys: frozenset[str],
    kinds: dict[str, tuple[str, int]],
    updated: frozenset[str] | None,
) -> list[bytes]:
    """Columns encoded by hand: the fixed fields are cached, only the value is new per row."""
    parts: list[bytes] = []
    for index, (name, value) in enumerate(row.items()):
        mysql_type, sql_type = kinds.get(name) or ("varchar(255)", _VARCHAR)
        is_updated = updated is not None and name in updated
        head = _column_head(index, sql_type, name, name in keys, is_updated, value is None)
        if value:
            encoded = value.encode()
            size = _varint(len(encoded))
            column = b"".join((head, _VALUE_TAG, size, encoded, _column_tail(mysql_type)))
        else:
            column = head + _column_tail(mysql_type)
        parts += (tag, _varint(len(column)), column)
    return parts


@lru_cache(maxsize=4096)
def _column_head(
    index: int, sql_type: int, name: str, is_key: bool, updated: bool, is_null: bool
) -> bytes:
    """Column fields 1-6, which precede the value (field 8) on the wire."""
    return pb.Column(
        index=index, sqlType=sql_type, name=name, isKey=is_key, updated=updated, isNull=is_null
    ).SerializeToString()


@lru_cache(maxsize=1024)
def _column_tail(mysql_type: str) -> bytes:
    """Column field 10 (mysqlType), which follows the value on the wire."""
    return pb.Column(mysqlType=mysql_type).SerializeToString()


_SMALL_VARINTS = [bytes((number,)) for number in range(0x80)]


def _varint(number: int) -> bytes:
    if number < 0x80:  # one byte holds 7 bits
        return _SMALL_VARINTS[number]
    out = bytearray()
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)
