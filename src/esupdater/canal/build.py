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
from typing import Literal, Required, TypedDict

import orjson
from typing_extensions import Unpack

from esupdater.canal import canal_pb2 as pb
from esupdater.canal.columns import ROW_DATA_TAG, ColumnCodec, Row, sql_type_for, varint

_LOGFILE = "mysql-bin.000001"
_SERVER_ID = 1


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RowEventFields(TypedDict, total=False):
    """What describes a row event, in both forms (the keyword arguments of the builders)."""

    mysql_types: Required[Mapping[str, str]]
    old: Sequence[Row] | None
    pk_names: Sequence[str]
    sql_types: Mapping[str, int] | None
    es_ms: int | None
    is_ddl: bool
    sql: str


def flat_message(
    database: str, table: str, type: str, rows: Sequence[Row], *, id: int = 1,
    **fields: Unpack[RowEventFields],
) -> bytes:
    """One FlatMessage as Canal's Kafka producer writes it with flatMessage=true."""
    mysql_types = fields["mysql_types"]
    old, is_ddl = fields.get("old"), fields.get("is_ddl", False)
    pk_names = fields.get("pk_names", ("id",))
    sql_types = fields.get("sql_types")
    es_ms = fields.get("es_ms")
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
            "sql": fields.get("sql", ""),
            "sqlType": None if rowless else dict(sql_types),
            "table": table,
            "ts": now,
            "type": type,
        },
        default=dict,  # rows given as other Mappings
    )


def protobuf_message(
    database: str, table: str, type: str, rows: Sequence[Row], *, id: int = 1,
    transaction: bool = False, **fields: Unpack[RowEventFields],
) -> bytes:
    """One Kafka record as Canal sends it with flatMessage=false: a batch of one row entry.

    With `transaction`, the entry is wrapped in TRANSACTIONBEGIN / TRANSACTIONEND entries, as
    Canal's default raw mode sends them (filterTransactionEntry does not apply there).
    """
    entry = protobuf_row_entry(database, table, type, rows, **fields)
    if transaction:
        es_ms = fields.get("es_ms")
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
    database: str, table: str, type: str, rows: Sequence[Row],
    **fields: Unpack[RowEventFields],
) -> bytes:
    """One ROWDATA Entry: header plus a RowChange holding every row."""
    is_ddl, old = fields.get("is_ddl", False), fields.get("old")
    event = pb.EventType.Value(type)
    change = pb.RowChange(
        tableId=1, eventType=event, isDdl=is_ddl, sql=fields.get("sql", "")
    ).SerializeToString()
    if not is_ddl:
        columns = ColumnCodec(fields["mysql_types"], fields.get("sql_types"),
                              frozenset(fields.get("pk_names", ("id",))))
        parts = [change]
        for index, row in enumerate(rows):
            row_old = old[index] if old is not None and index < len(old) else None
            data = b"".join(columns.row_data(type, row, row_old))
            parts += (ROW_DATA_TAG, varint(len(data)), data)
        change = b"".join(parts)
    return pb.Entry(
        header=_header(database, table, event, fields.get("es_ms")),
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
