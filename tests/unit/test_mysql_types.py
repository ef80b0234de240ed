"""The typing rules by MySQL column type that every source of rows shares (not only Canal)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from esupdater.canal.values import converter_for as canal_converter_for
from esupdater.mysql_types import as_text, converter_for, find_converter, labels, typed


@pytest.mark.parametrize(
    ("mysql_type", "text", "expected"),
    [
        ("bigint(20) unsigned", "18446744073709551615", 2**64 - 1),
        ("int", "-42", -42),
        ("tinyint(1)", "1", 1),
        ("decimal(10,2)", "12.50", Decimal("12.50")),
        ("double", "1.5", 1.5),
        ("datetime(3)", "2024-03-01 12:30:45.120", "2024-03-01T12:30:45.120"),
        ("timestamp", "0000-00-00 00:00:00", None),
        ("date", "2024-02-29", "2024-02-29"),
        ("time", "-838:59:59", "-838:59:59"),
        ("year", "2024", 2024),
        ("json", '{"a": [1, 2]}', {"a": [1, 2]}),
        ("bit(8)", "255", 255),
        ("enum('s','m','l')", "m", "m"),  # a table read gives the label
        ("set('a','b','c')", "a,c", ["a", "c"]),  # ... and the members, comma-separated
        ("set('a','b','c')", "", []),
        ("binary(4)", "\x01\x00\x00\x00", "\x01\x00\x00\x00"),  # a table read has all n bytes
        ("varchar(64)", "Ada", "Ada"),
        ("geometry", "POINT(1 2)", "POINT(1 2)"),  # unknown: the text as it is
    ],
)
def test_a_value_of_a_mysql_column_type_is_typed_as_handlers_get_it(
    mysql_type: str, text: str, expected: Any
) -> None:
    assert typed(mysql_type, text) == expected


def test_null_is_none_whatever_the_type() -> None:
    assert typed("int", None) is None


@pytest.mark.parametrize("mysql_type", ["tinyint(1)", "TINYINT(1) UNSIGNED", "bool", "boolean"])
def test_tinyint1_as_bool_makes_one_digit_tinyints_and_bools_booleans(mysql_type: str) -> None:
    assert typed(mysql_type, "1", tinyint1_as_bool=True) is True
    assert typed(mysql_type, "0", tinyint1_as_bool=True) is False
    assert typed(mysql_type, "1") == 1
    assert typed(mysql_type, "1") is not True


def test_tinyint1_as_bool_leaves_wider_tinyints_ints() -> None:
    assert typed("tinyint(4)", "1", tinyint1_as_bool=True) is not True


def test_a_type_the_rules_do_not_know_has_no_converter_so_a_source_may_type_it_otherwise() -> None:
    assert find_converter("geometry") is None
    assert converter_for("geometry") is as_text


@pytest.mark.parametrize(
    ("mysql_type", "text"),
    [("int", "abc"), ("decimal(5,2)", "NaN"), ("date", "2024-02-30"), ("float", "1.5e"),
     ("datetime", "2024-03-01"), ("json", "{")],
)
def test_a_value_that_is_not_of_its_type_raises_value_error(mysql_type: str, text: str) -> None:
    with pytest.raises((ValueError, ArithmeticError)):
        typed(mysql_type, text)


def test_converters_are_built_once_per_type() -> None:
    assert converter_for("decimal(10,2)") is converter_for("decimal(10,2)")


def test_canal_uses_the_shared_converter_for_types_it_sends_as_mysql_prints_them() -> None:
    """Same rules, same functions: a value typed from Canal equals one typed from a table."""
    for mysql_type in ("bigint(20)", "decimal(10,2)", "datetime", "json", "tinyint(1)"):
        for as_bool in (False, True):
            assert canal_converter_for(mysql_type, None, as_bool) is converter_for(
                mysql_type, as_bool)


def test_enum_and_set_labels_may_hold_quotes_and_commas() -> None:
    assert labels("set('it''s','x,y','')") == ("it's", "x,y", "")


@pytest.mark.parametrize(
    ("spellings", "value"),
    [
        # Canal's Java (Float.toString before JDK 19) writes a digit too many for some floats;
        # a table read gives the shortest digits. One FLOAT, one value in the document.
        (("-1.50000005E10", "-1.5E10", "-15000000512"), -1.5e10),
        (("3.3333333", "3.3333332538604736"), 3.3333333),
        (("0.1", "0.10000000149011612"), 0.1),
        (("16777217", "1.6777216E7"), 16777216.0),
    ],
)
def test_a_float_column_gives_the_shortest_number_of_its_single_precision_value(
    spellings: tuple[str, ...], value: float
) -> None:
    convert = converter_for("float", tinyint1_as_bool=False)
    assert [convert(text) for text in spellings] == [value] * len(spellings)


def test_a_double_column_keeps_every_digit() -> None:
    convert = converter_for("double", tinyint1_as_bool=False)
    assert convert("-1.50000005E10") == -15000000500.0
    assert convert("0.10000000149011612") == 0.10000000149011612
