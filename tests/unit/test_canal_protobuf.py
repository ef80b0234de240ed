"""Canal's protobuf form (flatMessage=false): Packet{MESSAGES, Messages{batch_id, Entry...}}."""

from __future__ import annotations

from esupdater.canal import (
    CanalDecoder,
    protobuf_heartbeat_entry,
    protobuf_message,
    protobuf_packet,
    protobuf_row_entry,
    protobuf_transaction_entry,
)
from esupdater.canal import canal_pb2 as pb
from esupdater.change import Position

DECODER = CanalDecoder()
POSITION = Position("canal", 1, 99)
TYPES = {"id": "int(11)", "name": "varchar(32)"}
ROW = {"id": "5", "name": "eve"}


def column(index: int, name: str, value: str | None, **fields: object) -> pb.Column:
    return pb.Column(
        index=index,
        sqlType=4 if name == "id" else 12,
        name=name,
        isKey=name == "id",
        isNull=value is None,
        value=value or "",
        mysqlType=TYPES[name],
        **fields,  # type: ignore[arg-type]
    )


def canal_packet(*entries: pb.Entry, version: int | None = 1) -> bytes:
    """Built with the generated classes the way CanalMessageSerializerUtil does."""
    messages = pb.Messages(batch_id=8, messages=[e.SerializeToString() for e in entries])
    packet = pb.Packet(type=pb.Packet.MESSAGES, body=messages.SerializeToString())
    if version is not None:
        packet.version = version
    return packet.SerializeToString()


def canal_update_entry() -> pb.Entry:
    """An UPDATE the way Canal's LogEventConvert fills it: full before and after images."""
    row = pb.RowData(
        beforeColumns=[column(0, "id", "5"), column(1, "name", "eva")],
        afterColumns=[column(0, "id", "5"), column(1, "name", "eve", updated=True)],
    )
    change = pb.RowChange(tableId=12, eventType=pb.UPDATE, isDdl=False, rowDatas=[row])
    header = pb.Header(
        version=1,
        logfileName="mysql-bin.000003",
        logfileOffset=1234,
        serverId=1,
        serverenCode="UTF-8",
        executeTime=1_700_000_000_000,
        sourceType=pb.MYSQL,
        schemaName="shop",
        tableName="users",
        eventType=pb.UPDATE,
    )
    return pb.Entry(header=header, entryType=pb.ROWDATA, storeValue=change.SerializeToString())


def test_an_entry_built_like_canal_decodes() -> None:
    [change] = DECODER.decode(canal_packet(canal_update_entry()), POSITION)

    assert (change.database, change.table, change.type) == ("shop", "users", "UPDATE")
    assert change.row == {"id": 5, "name": "eve"}
    assert change.old == {"name": "eva"}
    assert change.changed == frozenset({"name"})
    assert change.pk_names == ("id",)


def test_a_packet_without_version_as_in_canals_raw_mode_decodes() -> None:
    assert len(DECODER.decode(canal_packet(canal_update_entry(), version=None), POSITION)) == 1


def test_the_builder_writes_canals_raw_mode_packet_bytes() -> None:
    value = protobuf_message("shop", "users", "INSERT", [ROW], mysql_types=TYPES)

    # Packet field 3 (type) = MESSAGES (7), then field 5 (body); no version in raw mode.
    assert value[:3] == b"\x18\x07\x2a"


def test_the_builder_encodes_columns_as_the_generated_classes_do() -> None:
    entry = pb.Entry.FromString(
        protobuf_row_entry("shop", "users", "INSERT", [ROW], mysql_types=TYPES)
    )
    data = pb.RowChange.FromString(entry.storeValue).rowDatas[0]
    expected = pb.RowData(
        afterColumns=[column(0, "id", "5", updated=True), column(1, "name", "eve", updated=True)]
    )

    assert data.SerializeToString() == expected.SerializeToString()


def test_insert_columns_flagged_updated_do_not_make_old_values() -> None:
    [change] = DECODER.decode(
        protobuf_message("shop", "users", "INSERT", [ROW], mysql_types=TYPES), POSITION
    )

    assert change.old is None
    assert change.changed == frozenset()


def test_transaction_begin_and_end_entries_are_skipped() -> None:
    value = protobuf_message("shop", "users", "INSERT", [ROW], mysql_types=TYPES, transaction=True)

    assert [c.row for c in DECODER.decode(value, POSITION)] == [{"id": 5, "name": "eve"}]


def test_a_batch_of_only_transaction_entries_gives_nothing() -> None:
    value = protobuf_packet(
        [protobuf_transaction_entry("begin"), protobuf_transaction_entry("end")]
    )

    assert DECODER.decode(value, POSITION) == []


def test_heartbeat_entries_are_skipped() -> None:
    assert DECODER.decode(protobuf_packet([protobuf_heartbeat_entry()]), POSITION) == []


def test_gtid_entries_are_skipped() -> None:
    entry = pb.Entry(header=pb.Header(eventType=pb.GTID), entryType=pb.GTIDLOG)

    assert DECODER.decode(canal_packet(entry), POSITION) == []


def test_a_batch_of_entries_gives_rows_of_all_tables_numbered_through_the_record() -> None:
    value = protobuf_packet(
        [
            protobuf_transaction_entry("begin"),
            protobuf_row_entry("shop", "users", "INSERT", [ROW, ROW], mysql_types=TYPES),
            protobuf_row_entry("shop", "admins", "DELETE", [ROW], mysql_types=TYPES),
            protobuf_transaction_entry("end"),
        ]
    )

    changes = DECODER.decode(value, POSITION)

    assert [(c.table, c.type, c.row_index) for c in changes] == [
        ("users", "INSERT", 0),
        ("users", "INSERT", 1),
        ("admins", "DELETE", 2),
    ]


def test_an_entry_without_entry_type_is_row_data_as_in_canals_proto2() -> None:
    entry = canal_update_entry()
    entry.ClearField("entryType")

    assert len(DECODER.decode(canal_packet(entry), POSITION)) == 1


def test_the_header_event_type_is_used_when_the_row_change_has_none() -> None:
    entry = canal_update_entry()
    change = pb.RowChange.FromString(entry.storeValue)
    change.ClearField("eventType")
    entry.storeValue = change.SerializeToString()

    assert DECODER.decode(canal_packet(entry), POSITION)[0].type == "UPDATE"


def test_ddl_entries_use_the_header_names() -> None:
    sql = "TRUNCATE TABLE users"
    change = pb.RowChange(eventType=pb.TRUNCATE, isDdl=True, sql=sql)
    header = pb.Header(schemaName="shop", tableName="users", eventType=pb.TRUNCATE)
    entry = pb.Entry(header=header, entryType=pb.ROWDATA, storeValue=change.SerializeToString())

    [ddl] = DECODER.decode(canal_packet(entry), POSITION)

    assert (ddl.database, ddl.table, ddl.type, ddl.sql, ddl.is_ddl) == (
        "shop", "users", "TRUNCATE", sql, True
    )  # fmt: skip


def test_values_longer_than_a_one_byte_length_round_trip() -> None:
    long_name = "é" * 300
    value = protobuf_message(
        "shop", "users", "INSERT", [{"id": "5", "name": long_name}], mysql_types=TYPES
    )

    assert DECODER.decode(value, POSITION)[0].row["name"] == long_name
