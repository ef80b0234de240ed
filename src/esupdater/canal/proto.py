"""Canal's protobuf form (flatMessage=false): a Packet whose body is a batch of Entry bytes.

Canal's Kafka producer (CanalMessageSerializerUtil) writes one Packet{type=MESSAGES,
body=Messages{batch_id, messages=[Entry, ...]}} per record. A batch may hold many tables and
transactions; transaction begin/end, heartbeat and GTID entries carry no rows and are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from esupdater.canal import canal_pb2 as pb
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

_M = TypeVar("_M", bound=Message)

_NOT_COMPRESSED = frozenset({pb.Packet.COMPRESSIONCOMPATIBLEPROTO2, pb.Packet.NONE})
_SKIPPED_ENTRIES = frozenset(
    {pb.TRANSACTIONBEGIN, pb.TRANSACTIONEND, pb.HEARTBEAT, pb.GTIDLOG}
)
#: Canal's proto2 default entry type was ROWDATA, so an unset one means rows.
_ROW_ENTRIES = frozenset({pb.ROWDATA, pb.ENTRYTYPECOMPATIBLEPROTO2})


def decode_protobuf(value: bytes, position: Position, tinyint1_as_bool: bool) -> list[Change]:
    """One Change per row of every row entry in the batch, one per DDL statement."""
    packet = _parse(pb.Packet, value, position, "neither JSON nor a Canal packet")
    if packet.type != pb.Packet.MESSAGES:
        name = _name(pb.Packet.PacketType.Name, packet.type)
        raise CanalDecodeError(position, f"not a Canal message: packet type {name}, not MESSAGES")
    if packet.compression not in _NOT_COMPRESSED:
        name = _name(pb.Packet.Compression.Name, packet.compression)
        raise CanalDecodeError(position, f"compressed Canal packets ({name}) are not supported")
    messages = _parse(pb.Messages, packet.body, position, "packet body is not Messages")
    changes: list[Change] = []
    for number, entry_bytes in enumerate(messages.messages):
        entry = _parse(pb.Entry, entry_bytes, position, f"entry {number} is not an Entry")
        if entry.entryType in _SKIPPED_ENTRIES:
            continue
        if entry.entryType not in _ROW_ENTRIES:
            kind = entry.entryType
            raise CanalDecodeError(position, f"entry {number}: unknown entry type {kind}")
        _decode_entry(entry, number, position, tinyint1_as_bool, changes)
    return changes


def _decode_entry(
    entry: pb.Entry,
    number: int,
    position: Position,
    tinyint1_as_bool: bool,
    changes: list[Change],
) -> None:
    header = entry.header
    row_change = _parse(pb.RowChange, entry.storeValue, position, f"entry {number} row change")
    if row_change.HasField("eventType"):
        event = row_change.eventType
    elif header.HasField("eventType"):
        event = header.eventType
    else:
        raise CanalDecodeError(position, f"entry {number}: missing field eventType")
    type_ = _name(pb.EventType.Name, event)
    database, table = header.schemaName, header.tableName
    when = executed_at(header.executeTime, position)
    if is_statement_annotation(type_, row_change.isDdl):
        return
    if row_change.isDdl or type_ in DDL_TYPES:
        changes.append(
            ddl_change(database, table, type_, row_change.sql, (), when, position, len(changes))
        )
        return
    if type_ in SKIPPED_TYPES or not row_change.rowDatas:
        return
    if type_ not in ROW_TYPES:
        raise CanalDecodeError(position, f"entry {number}: unknown event type {type_} for rows")
    converters: dict[str, Converter] = {}
    images = [_image(data, type_, converters, tinyint1_as_bool) for data in row_change.rowDatas]
    typer = RowTyper(converters, position)
    for raw, raw_old, pk_names in images:
        changes.append(
            Change(
                database=database,
                table=table,
                type=type_,
                row=typer(raw),
                old=None if raw_old is None else typer(raw_old),
                pk_names=pk_names,
                raw=raw,
                executed_at=when,
                sql="",
                position=position,
                row_index=len(changes),
                changed=frozenset(raw_old or ()),
                old_pk=None if raw_old is None else previous_pk(pk_names, raw, raw_old),
            )
        )


def _image(
    row_data: pb.RowData, type_: str, converters: dict[str, Converter], tinyint1_as_bool: bool
) -> tuple[dict[str, str | None], dict[str, str | None] | None, tuple[str, ...]]:
    """Canal's strings of one row, of its changed columns' old values, and its key names.

    The row is the after-image, or the before-image for DELETE. Converters for columns not
    seen before are added to `converters`.
    """
    is_update = type_ == "UPDATE"
    raw: dict[str, str | None] = {}
    pk_names = []
    updated = set()
    for column in row_data.beforeColumns if type_ == "DELETE" else row_data.afterColumns:
        name = column.name
        raw[name] = None if column.isNull else column.value
        if name not in converters:
            converters[name] = converter_for(column.mysqlType, column.sqlType, tinyint1_as_bool)
        if column.isKey:
            pk_names.append(name)
        # Canal flags every after-image column of an INSERT as updated; only UPDATE's matter.
        if is_update and column.updated:
            updated.add(name)
    raw_old = None
    if is_update:
        # The changed columns are flagged on the after-image; their old values are the before's.
        raw_old = {
            column.name: None if column.isNull else column.value
            for column in row_data.beforeColumns
            if column.name in updated
        }
    return raw, raw_old, tuple(pk_names)


def _parse(kind: type[_M], data: bytes, position: Position, what: str) -> _M:
    try:
        return kind.FromString(data)
    except DecodeError as exc:
        raise CanalDecodeError(position, f"bad protobuf: {what} ({exc})") from exc


def _name(lookup: Callable[[Any], str], number: int) -> str:
    try:
        return lookup(number)
    except ValueError:
        return f"#{number}"
