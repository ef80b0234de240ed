"""MySQL column types to Python values: one converter per column type, built once and cached.

Any source of MySQL rows shares these rules, so a column holds the same Python value however
its row arrived (Canal's binlog messages, a table read). A converter takes the value's text as
MySQL prints it (`12.50`, `2024-03-01 12:30:45`, an ENUM's label, a SET's comma-separated
members, an integer's or BIT's decimal digits) and gives what handlers get in `Change.row`;
docs/types.md lists them. A source whose wire form differs (Canal's ENUM index, SET bitmask,
BINARY without its trailing zero bytes) adapts its values around these.

Converters raise ValueError or ArithmeticError for a value that is not of the type; the
source names the record and column.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

#: Text of a column value -> the value handlers get.
Converter = Callable[[str], Any]

#: MySQL's zero date; Elasticsearch cannot store it, so it becomes None.
ZERO_DATE = "0000-00-00"
_DATE_LEN = len("YYYY-MM-DD")
_DATETIME_LEN = len("YYYY-MM-DD HH:MM:SS")
_parse_datetime = datetime.fromisoformat
_parse_date = date.fromisoformat


def as_text(value: str) -> str:
    """The converter of every type whose value stays the string it is (callers may skip it)."""
    return value


#: `int` itself: a Python function around it would only add a call per value.
as_int: Converter = int


def as_bool(value: str) -> bool:
    return int(value) != 0


def as_decimal(value: str) -> Decimal:
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return number


def as_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def as_float32(value: str) -> float:
    """FLOAT: the fewest digits that are the same single-precision float.

    One FLOAT has several spellings: Canal's Java before 19 writes some with a digit too many
    (`-1.50000005E10` for -1.5E10, JDK-4511638), a table read gives the double it widens to
    (`-15000000512`). As floats those differ; the shortest spelling is one value for all.
    """
    return float(float32_shortest(as_float(value)))


def float32_shortest(number: float) -> str:
    """The shortest decimal text that rounds to the same single-precision float as `number`."""
    single = _as_single(number)
    for digits in range(1, _FLOAT32_DIGITS):
        text = f"{single:.{digits}g}"
        if _as_single(float(text)) == single:
            return text
    return f"{single:.{_FLOAT32_DIGITS}g}"


def _as_single(number: float) -> float:
    value: float = _SINGLE.unpack(_SINGLE.pack(number))[0]
    return value


#: A single-precision float, packed and unpacked to round a double to it.
_SINGLE = struct.Struct("<f")
#: Significant digits that always give a single-precision float back.
_FLOAT32_DIGITS = 9


def as_datetime(value: str) -> str | None:
    """`YYYY-MM-DD HH:MM:SS[.f]` -> `YYYY-MM-DDTHH:MM:SS[.f]`, which ES's default format takes.

    The usual value costs one parse and one replace; any other takes `_odd_datetime`.
    """
    if len(value) < _DATETIME_LEN or value[_DATE_LEN] != " ":
        return _odd_datetime(value)
    try:
        _parse_datetime(value)  # validates in C; far cheaper than checking characters here
    except ValueError:
        return _odd_datetime(value)  # the zero date too: year 0 does not parse
    iso = value.replace(" ", "T", 1)
    if iso[_DATE_LEN] != "T":  # a space before the one at 10 (never parses: belt and braces)
        return _odd_datetime(value)
    return iso


def _odd_datetime(value: str) -> str | None:
    """`as_datetime` by its rules in order: the zero date, the shape, the parse, the `T`."""
    if value.startswith(ZERO_DATE):
        return None
    if len(value) < _DATETIME_LEN or value[_DATE_LEN] != " ":
        raise ValueError(f"not a datetime: {value!r}")
    _parse_datetime(value)
    return value[:_DATE_LEN] + "T" + value[_DATE_LEN + 1 :]


def as_date(value: str) -> str | None:
    if value == ZERO_DATE:
        return None
    if len(value) != _DATE_LEN:
        raise ValueError(f"not a date: {value!r}")
    _parse_date(value)
    return value


def as_json(value: str) -> Any:
    return orjson.loads(value)


def as_set(value: str) -> list[str]:
    """A SET's comma-separated members as a list (MySQL forbids commas inside members)."""
    return value.split(",") if value else []


def is_digits(text: str) -> bool:
    """Only ASCII decimal digits (str.isdigit alone takes other scripts' digits too)."""
    return text.isdigit() and text.isascii()


def base_type(mysql_type: str) -> str:
    """`bigint(20) unsigned` -> `bigint`; `enum('a','b')` -> `enum`."""
    end = len(mysql_type)
    for stop in ("(", " "):
        found = mysql_type.find(stop)
        if 0 <= found < end:
            end = found
    return mysql_type[:end].strip().lower()


def labels(mysql_type: str) -> tuple[str, ...]:
    """The quoted labels of `enum('a','b')` / `set('a','b')`; `''` inside a label is a quote."""
    found: list[str] = []
    text = mysql_type[mysql_type.find("(") + 1 : mysql_type.rfind(")")]
    index = 0
    while (start := text.find("'", index)) >= 0:
        index = start + 1
        label = []
        while index < len(text):
            if text[index] == "'":
                if text[index + 1 : index + 2] != "'":
                    break
                index += 1
            label.append(text[index])
            index += 1
        found.append("".join(label))
        index += 1
    return tuple(found)


#: MySQL's largest BINARY(n); a larger n is no BINARY column.
BINARY_MAX = 255


def binary_size(mysql_type: str) -> int | None:
    """The n of `binary(n)`, or None when the type does not declare a valid one."""
    text = mysql_type[mysql_type.find("(") + 1 : mysql_type.find(")")]
    if "(" not in mysql_type or not is_digits(text) or not 0 < int(text) <= BINARY_MAX:
        return None
    return int(text)


def is_tinyint1(mysql_type: str) -> bool:
    """`tinyint(1)`, `bool` or `boolean`: the columns `tinyint1_as_bool` makes booleans."""
    base = base_type(mysql_type)
    return base in ("bool", "boolean") or (base == "tinyint" and "(1)" in mysql_type)


_BY_BASE: dict[str, Converter] = {
    **dict.fromkeys(
        ("tinyint", "smallint", "mediumint", "int", "integer", "bigint", "bool", "boolean"),
        as_int,
    ),
    **dict.fromkeys(("decimal", "numeric", "dec", "fixed"), as_decimal),
    "float": as_float32,
    **dict.fromkeys(("double", "real"), as_float),
    "datetime": as_datetime,
    "timestamp": as_datetime,
    "date": as_date,
    "time": as_text,
    "year": as_int,
    "json": as_json,
    "bit": as_int,
    "enum": as_text,  # the label
    "set": as_set,
    **dict.fromkeys(
        (
            "char", "varchar", "tinytext", "text", "mediumtext", "longtext",
            "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob",
        ),
        as_text,
    ),
}  # fmt: skip

_cache: dict[tuple[str, bool], Converter | None] = {}


def find_converter(mysql_type: str, tinyint1_as_bool: bool = False) -> Converter | None:
    """The converter for a MySQL column type (`decimal(10,2)`, `tinyint(1)`, ...), or None for
    a type these rules do not know (`geometry`, ...), which a source may type otherwise."""
    key = (mysql_type, tinyint1_as_bool)
    try:
        return _cache[key]
    except KeyError:
        pass
    found = _BY_BASE.get(base_type(mysql_type))
    if tinyint1_as_bool and found is as_int and is_tinyint1(mysql_type):
        found = as_bool
    _cache[key] = found
    return found


def converter_for(mysql_type: str, tinyint1_as_bool: bool = False) -> Converter:
    """The converter for a MySQL column type; a type these rules do not know stays text."""
    return find_converter(mysql_type, tinyint1_as_bool) or as_text


def typed(mysql_type: str, value: str | None, *, tinyint1_as_bool: bool = False) -> Any:
    """One value's text (None for NULL) as handlers get it from a column of `mysql_type`.

    For a single value; a row reader should hold `converter_for` per column instead.
    """
    return None if value is None else converter_for(mysql_type, tinyint1_as_bool)(value)
