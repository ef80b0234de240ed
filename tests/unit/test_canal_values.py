"""How Canal's strings are typed from mysqlType, with sqlType as the fallback."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from esupdater.canal import CanalDecoder, flat_message
from esupdater.canal.values import converter_for
from esupdater.change import Position
from esupdater.mysql_types import labels

DECODER = CanalDecoder()
POSITION = Position("canal", 0, 1)


def typed(mysql_type: str, value: str, **options: Any) -> Any:
    """Decodes one value the way a handler sees it: through a flat record."""
    record = flat_message("db", "t", "INSERT", [{"v": value}], mysql_types={"v": mysql_type})
    return CanalDecoder(**options).decode(record, POSITION)[0].row["v"]


@pytest.mark.parametrize(
    ("mysql_type", "value", "expected"),
    [
        ("int(11)", "-42", -42),
        ("int", "7", 7),
        ("bigint(20) unsigned", "18446744073709551615", 18446744073709551615),
        ("smallint(6)", "3", 3),
        ("mediumint(8) unsigned zerofill", "00042", 42),
        ("tinyint(4)", "-1", -1),
        ("tinyint(1)", "1", 1),
        ("year(4)", "2024", 2024),
        ("year", "0000", 0),
        ("bit(1)", "1", 1),
        ("bit(8)", "255", 255),
        ("decimal(10,2)", "12345678.90", Decimal("12345678.90")),
        ("decimal(65,30)", "0.000000000000000000000000000001", Decimal("1E-30")),
        ("numeric(5,0)", "-5", Decimal("-5")),
        ("float", "1.5", 1.5),
        ("double", "1.0E10", 1.0e10),
        ("double unsigned", "-0.25", -0.25),
        ("datetime", "2024-03-01 12:30:45", "2024-03-01T12:30:45"),
        ("datetime(3)", "2024-03-01 12:30:45.120", "2024-03-01T12:30:45.120"),
        ("datetime(6)", "2024-03-01 12:30:45.123456", "2024-03-01T12:30:45.123456"),
        ("timestamp", "1999-12-31 23:59:59", "1999-12-31T23:59:59"),
        ("timestamp(2)", "1999-12-31 23:59:59.50", "1999-12-31T23:59:59.50"),
        ("date", "2024-02-29", "2024-02-29"),
        ("time", "-838:59:59", "-838:59:59"),
        ("time(3)", "12:00:00.500", "12:00:00.500"),
        ("json", '{"a": [1, 2, null]}', {"a": [1, 2, None]}),
        ("json", "3", 3),
        ("varchar(255)", "hello, world", "hello, world"),
        ("char(3)", "abc", "abc"),
        ("text", "long text", "long text"),
        ("longtext", "", ""),
        ("blob", "\u00ff\u0000", "\u00ff\u0000"),
        ("varbinary(16)", "raw", "raw"),
        ("binary(2)", "ab", "ab"),
        ("geometry", "POINT", "POINT"),
        ("VARCHAR(10)", "upper", "upper"),
    ],
)
def test_a_value_is_typed_from_its_mysql_type(mysql_type: str, value: str, expected: Any) -> None:
    result = typed(mysql_type, value)

    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("mysql_type", ["datetime", "datetime(6)", "timestamp"])
def test_a_zero_datetime_is_none(mysql_type: str) -> None:
    assert typed(mysql_type, "0000-00-00 00:00:00") is None


def test_a_zero_date_is_none() -> None:
    assert typed("date", "0000-00-00") is None


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("0", False), ("-1", True)])
def test_tinyint1_is_a_bool_when_configured(value: str, expected: bool) -> None:
    assert typed("tinyint(1)", value, tinyint1_as_bool=True) is expected


def test_wider_tinyints_stay_ints_when_tinyint1_is_a_bool() -> None:
    assert typed("tinyint(4)", "1", tinyint1_as_bool=True) == 1
    assert typed("tinyint(4) unsigned", "1", tinyint1_as_bool=True) is not True


@pytest.mark.parametrize(
    ("value", "expected"), [("2", "b"), ("1", "a, or not"), ("0", ""), ("b", "b")]
)
def test_an_enum_index_from_canal_becomes_its_label(value: str, expected: str) -> None:
    assert typed("enum('a, or not','b')", value) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [("5", ["a", "c"]), ("0", []), ("a,c", ["a", "c"]), ("", [])]
)
def test_a_set_bitmask_from_canal_becomes_its_members(value: str, expected: list[str]) -> None:
    assert typed("set('a','b','c')", value) == expected


def test_enum_and_set_labels_may_hold_quotes_and_commas() -> None:
    assert labels("enum('it''s','x,y','')") == ("it's", "x,y", "")


@pytest.mark.parametrize(
    ("sql_type", "value", "expected"),
    [
        (4, "12", 12),
        (-5, "12", 12),
        (-7, "1", 1),
        (3, "1.10", Decimal("1.10")),
        (8, "2.5", 2.5),
        (16, "1", True),
        (93, "2024-01-02 03:04:05", "2024-01-02T03:04:05"),
        (91, "2024-01-02", "2024-01-02"),
        (92, "03:04:05", "03:04:05"),
        (12, "x", "x"),
        (1111, "other", "other"),
    ],
)
def test_sql_type_types_a_value_without_mysql_type(
    sql_type: int, value: str, expected: Any
) -> None:
    assert converter_for(None, sql_type)(value) == expected
    assert converter_for("", sql_type)(value) == expected


def test_mysql_type_wins_over_sql_type() -> None:
    # Canal reports an unsigned bigint that overflows Java's long as DECIMAL.
    assert converter_for("bigint(20) unsigned", 3)("18446744073709551615") == 2**64 - 1


def test_an_unknown_mysql_type_falls_back_to_sql_type() -> None:
    assert converter_for("mystery", 4)("3") == 3


def test_converters_are_built_once_per_type() -> None:
    assert converter_for("enum('a','b')", 4) is converter_for("enum('a','b')", 4)


@pytest.mark.parametrize(
    ("mysql_type", "value", "expected"),
    [
        ("binary(4)", "", "\x00\x00\x00\x00"),  # x'00000000': Canal sends ""
        ("binary(4)", "\x01", "\x01\x00\x00\x00"),  # x'01000000'
        ("binary(4)", "\xff\x00\xff", "\xff\x00\xff\x00"),  # zeros inside stay
        ("binary(4)", "\x00\x00\x00\x01", "\x00\x00\x00\x01"),  # full: unchanged
        ("BINARY(16)", "\x12", "\x12" + "\x00" * 15),
        ("binary(2)", "ab", "ab"),
    ],
)
def test_binary_gets_back_the_trailing_zero_bytes_the_binlog_dropped(
    mysql_type: str, value: str, expected: str
) -> None:
    assert typed(mysql_type, value) == expected
    assert len(expected.encode("latin-1")) == len(expected)


@pytest.mark.parametrize(
    "mysql_type", ["varbinary(4)", "blob", "tinyblob", "binary", "binary(0)", "binary(256)"]
)
def test_other_binary_types_are_not_padded(mysql_type: str) -> None:
    assert typed(mysql_type, "\x01") == "\x01"


def test_the_old_value_of_a_binary_column_is_padded_too() -> None:
    record = flat_message("db", "t", "UPDATE", [{"id": "1", "b": "\x02"}], old=[{"b": ""}],
                          mysql_types={"id": "int(11)", "b": "binary(3)"})

    [change] = DECODER.decode(record, POSITION)

    assert (change.row["b"], change.old) == ("\x02\x00\x00", {"b": "\x00\x00\x00"})
    assert change.raw["b"] == "\x02"  # raw keeps Canal's string
