"""Bad input always gives CanalDecodeError naming the record and what is wrong, never more."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from esupdater.canal import (
    CanalDecodeError,
    CanalDecoder,
    flat_message,
    protobuf_message,
    protobuf_packet,
)
from esupdater.canal import canal_pb2 as pb
from esupdater.change import Position
from esupdater.errors import EsupdaterError

POSITION = Position("orders", 3, 1200)
TYPES = {"id": "int(11)", "name": "varchar(8)"}
ROWS = [{"id": "1", "name": "a"}]
GOOD_FLAT = flat_message("shop", "t", "UPDATE", ROWS, old=[{"name": "b"}], mysql_types=TYPES)
GOOD_PROTOBUF = protobuf_message(
    "shop", "t", "UPDATE", ROWS, old=[{"name": "b"}], mysql_types=TYPES, transaction=True
)
DECODER = CanalDecoder()


def reason(value: bytes | None) -> str:
    """The error's message, checked to start with the record's position."""
    with pytest.raises(CanalDecodeError) as caught:
        DECODER.decode(value, POSITION)
    assert str(caught.value).startswith("orders/3@1200: ")
    assert caught.value.position == POSITION
    return caught.value.reason


def flat(**changes: Any) -> bytes:
    message = orjson.loads(GOOD_FLAT)
    message.update(changes)
    return orjson.dumps(message)


def test_the_error_is_an_esupdater_error_and_a_value_error() -> None:
    assert issubclass(CanalDecodeError, EsupdaterError)
    assert issubclass(CanalDecodeError, ValueError)


def test_a_tombstone_is_not_a_canal_message() -> None:
    assert "tombstone" in reason(None)


def test_an_empty_value_is_not_a_canal_message() -> None:
    assert "empty" in reason(b"")


def test_bad_json_says_so() -> None:
    assert reason(b'{"database": ').startswith("bad JSON")


def test_a_json_list_is_not_a_canal_message() -> None:
    assert reason(b"[1, 2]") == "not a Canal flat message: JSON a list, not an object"


@pytest.mark.parametrize("field", ["database", "table", "type"])
def test_a_missing_field_is_named(field: str) -> None:
    message = orjson.loads(GOOD_FLAT)
    del message[field]

    assert reason(orjson.dumps(message)) == f"not a Canal flat message: missing field {field!r}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("database", 1),
        ("table", None),
        ("type", ["INSERT"]),
        ("isDdl", "true"),
        ("es", "1700000000000"),
        ("es", True),
        ("es", 1.5),
        ("pkNames", "id"),
        ("pkNames", [1]),
        ("data", {"id": "1"}),
        ("data", [["1"]]),
        ("old", {"name": "b"}),
        ("old", ["b"]),
        ("mysqlType", ["int"]),
        ("mysqlType", {"id": 4}),
        ("sqlType", {"id": "4"}),
        ("sql", 5),
    ],
)
def test_a_field_of_the_wrong_type_is_named(field: str, value: Any) -> None:
    assert field in reason(flat(**{field: value}))


def test_a_value_that_is_not_a_string_is_named_with_its_column() -> None:
    assert "column 'name'" in reason(flat(data=[{"id": "1", "name": 5}]))


def test_old_values_not_matching_the_rows_are_rejected() -> None:
    assert "'old' has 2 entries for 1 rows" in reason(flat(old=[{}, {}]))


def test_an_unknown_event_type_with_rows_is_rejected() -> None:
    assert "unknown event type 'UPSERT'" in reason(flat(type="UPSERT"))


def test_an_execution_time_out_of_range_is_rejected() -> None:
    assert "out of range" in reason(flat(es=10**18))


@pytest.mark.parametrize(
    ("mysql_type", "value"),
    [
        ("int(11)", "abc"),
        ("int(11)", "1.5"),
        ("bigint(20)", ""),
        ("decimal(10,2)", "ten"),
        ("decimal(10,2)", "NaN"),
        ("double", "inf"),
        ("float", "x"),
        ("datetime", "yesterday"),
        ("datetime", "2024-13-01 00:00:00"),
        ("datetime(3)", "2024-01-01 00:00:00."),
        ("timestamp", "2024-01-01T00:00:00"),
        ("date", "2024-02-30"),
        ("date", "20240101"),
        ("year", "MMXXIV"),
        ("json", "{not json"),
        ("bit(1)", "b'1'"),
        ("tinyint(1)", "yes"),
        ("enum('a')", "2"),
        ("set('a','b')", "4"),
    ],
)
def test_a_value_that_does_not_parse_names_its_column(mysql_type: str, value: str) -> None:
    record = flat_message("db", "t", "INSERT", [{"v": value}], mysql_types={"v": mysql_type})

    with pytest.raises(CanalDecodeError) as caught:
        CanalDecoder(tinyint1_as_bool=True).decode(record, POSITION)

    assert str(caught.value).startswith(f"orders/3@1200: column 'v': {value!r}")


def test_a_bad_old_value_is_rejected_too() -> None:
    assert "column 'id'" in reason(flat(old=[{"id": "one"}]))


def test_bytes_that_are_not_protobuf_say_so() -> None:
    assert reason(b"\xff\xff\xff").startswith("bad protobuf")


def test_a_packet_that_is_not_messages_is_not_a_canal_message() -> None:
    value = pb.Packet(type=pb.Packet.ACK, body=b"").SerializeToString()

    assert reason(value) == "not a Canal message: packet type ACK, not MESSAGES"


def test_a_compressed_packet_is_not_supported() -> None:
    packet = pb.Packet.FromString(GOOD_PROTOBUF)
    packet.compression = pb.Packet.ZLIB

    assert "compressed" in reason(packet.SerializeToString())


def test_a_packet_body_that_is_not_messages_says_so() -> None:
    value = pb.Packet(type=pb.Packet.MESSAGES, body=b"\xff\xff").SerializeToString()

    assert "packet body is not Messages" in reason(value)


def test_an_entry_that_does_not_parse_says_which() -> None:
    assert "entry 0 is not an Entry" in reason(protobuf_packet([b"\xff\xff"]))


def test_a_row_change_that_does_not_parse_says_which_entry() -> None:
    entry = pb.Entry(entryType=pb.ROWDATA, storeValue=b"\xff\xff").SerializeToString()

    assert "entry 0 row change" in reason(protobuf_packet([entry]))


def test_an_entry_without_event_type_says_so() -> None:
    entry = pb.Entry(entryType=pb.ROWDATA, storeValue=b"").SerializeToString()

    assert reason(protobuf_packet([entry])) == "entry 0: missing field eventType"


def test_an_unknown_entry_type_says_so() -> None:
    entry = pb.Entry(entryType=77).SerializeToString()  # type: ignore[arg-type]

    assert "unknown entry type 77" in reason(protobuf_packet([entry]))


def test_an_unknown_event_type_with_rows_says_so() -> None:
    change = pb.RowChange(eventType=99, rowDatas=[pb.RowData()])  # type: ignore[arg-type]
    entry = pb.Entry(entryType=pb.ROWDATA, storeValue=change.SerializeToString())

    assert "unknown event type #99" in reason(protobuf_packet([entry.SerializeToString()]))


def test_a_protobuf_value_that_does_not_parse_names_its_column() -> None:
    value = protobuf_message("db", "t", "INSERT", [{"id": "x"}], mysql_types={"id": "int(11)"})

    assert reason(value).startswith("column 'id': 'x'")


def decodes_or_rejects(value: bytes) -> None:
    """Either a list of changes or CanalDecodeError naming the record; nothing else escapes."""
    outcome: object
    try:
        outcome = DECODER.decode(value, POSITION)
    except CanalDecodeError as exc:
        outcome = exc
    if isinstance(outcome, CanalDecodeError):
        assert str(outcome).startswith("orders/3@1200: ")
    else:
        assert isinstance(outcome, list)


def test_random_bytes_never_raise_anything_else() -> None:
    rng = random.Random(20240301)
    for _ in range(3000):
        decodes_or_rejects(rng.randbytes(rng.randrange(1, 64)))


@pytest.mark.parametrize("good", [GOOD_FLAT, GOOD_PROTOBUF], ids=["flat", "protobuf"])
def test_every_truncation_never_raises_anything_else(good: bytes) -> None:
    for size in range(1, len(good)):
        decodes_or_rejects(good[:size])


@pytest.mark.parametrize("good", [GOOD_FLAT, GOOD_PROTOBUF], ids=["flat", "protobuf"])
def test_flipped_bytes_never_raise_anything_else(good: bytes) -> None:
    rng = random.Random(7)
    for _ in range(3000):
        value = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            value[rng.randrange(len(value))] = rng.randrange(256)
        decodes_or_rejects(bytes(value))


@pytest.mark.parametrize(
    "document",
    ["null", "1", '"x"', "{}", '{"type": null}', '{"data": [null]}', "[]", "[{}]", "{" * 5000],
)
def test_odd_json_never_raises_anything_else(document: str) -> None:
    decodes_or_rejects(document.encode())


@pytest.mark.parametrize(
    ("good", "decoder"), [(GOOD_FLAT, "decode_flat"), (GOOD_PROTOBUF, "decode_protobuf")],
    ids=["flat", "protobuf"],
)
def test_a_decoder_bug_sets_the_one_record_aside_naming_its_position(
    good: bytes, decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(value: bytes, position: Position, tinyint1_as_bool: bool) -> list[Any]:
        raise KeyError("a bug")

    monkeypatch.setattr(f"esupdater.canal.decode.{decoder}", broken)

    text = reason(good)
    assert "KeyError" in text
    assert "a bug" in text
