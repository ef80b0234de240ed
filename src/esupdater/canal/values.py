"""Typing Canal's string values by column type: the hot path, one cached converter per type.

Canal sends every value as a string (or null) with the column's `mysqlType` (e.g.
`bigint(20) unsigned`) and `sqlType` (a java.sql.Types number). The converter for a type is
built once and kept in a dict; converting a value is then one call, with no regex.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

from esupdater.canal.errors import CanalDecodeError
from esupdater.change import Position

Converter = Callable[[str], Any]

#: Canal's text for MySQL's zero date; Elasticsearch cannot store it, so it becomes None.
ZERO_DATE = "0000-00-00"
_DATE_LEN = len("YYYY-MM-DD")
_DATETIME_LEN = len("YYYY-MM-DD HH:MM:SS")
_parse_datetime = datetime.fromisoformat
_parse_date = date.fromisoformat


def _as_str(value: str) -> str:
    return value


def _as_int(value: str) -> int:
    return int(value)


def _as_bool(value: str) -> bool:
    return int(value) != 0


def _as_decimal(value: str) -> Decimal:
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return number


def _as_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _as_datetime(value: str) -> str | None:
    """`YYYY-MM-DD HH:MM:SS[.f]` -> `YYYY-MM-DDTHH:MM:SS[.f]`, which ES's default format takes."""
    if value.startswith(ZERO_DATE):
        return None
    if len(value) < _DATETIME_LEN or value[_DATE_LEN] != " ":
        raise ValueError(f"not a datetime: {value!r}")
    _parse_datetime(value)  # validates in C; far cheaper than checking characters here
    return value[:_DATE_LEN] + "T" + value[_DATE_LEN + 1 :]


def _as_date(value: str) -> str | None:
    if value == ZERO_DATE:
        return None
    if len(value) != _DATE_LEN:
        raise ValueError(f"not a date: {value!r}")
    _parse_date(value)
    return value


def _digits(text: str) -> bool:
    return text.isdigit() and text.isascii()


def _as_json(value: str) -> Any:
    return orjson.loads(value)


def _as_set(value: str) -> list[str]:
    return value.split(",") if value else []


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


#: MySQL's largest BINARY(n); a larger n is no BINARY column, and is not padded.
_BINARY_MAX = 255


def _binary_converter(mysql_type: str) -> Converter:
    """BINARY(n): the binlog drops a value's trailing zero bytes, so Canal sends x'01000000' as
    one character and x'00000000' as ""; padded back to n, it is MySQL's value again."""
    text = mysql_type[mysql_type.find("(") + 1 : mysql_type.find(")")]
    if "(" not in mysql_type or not _digits(text) or not 0 < int(text) <= _BINARY_MAX:
        return _as_str
    size = int(text)

    def convert(value: str) -> str:
        return value.ljust(size, "\x00")

    return convert


def _enum_converter(names: tuple[str, ...]) -> Converter:
    """Canal sends an ENUM as its 1-based index (0 is MySQL's '' for an invalid value)."""

    def convert(value: str) -> str:
        if not _digits(value):
            return value  # already the label
        number = int(value)
        if number == 0:
            return ""
        if number > len(names):
            raise ValueError(f"enum index {number} beyond the {len(names)} declared values")
        return names[number - 1]

    return convert


def _set_converter(names: tuple[str, ...]) -> Converter:
    """Canal sends a SET as its bitmask: bit i set means the i-th declared member."""

    def convert(value: str) -> list[str]:
        if not _digits(value):
            return _as_set(value)  # already the comma-separated members
        mask = int(value)
        if mask >> len(names):
            raise ValueError(f"set bitmask {mask} has bits beyond the {len(names)} members")
        return [name for bit, name in enumerate(names) if mask >> bit & 1]

    return convert


_BY_MYSQL: dict[str, Converter] = {
    **dict.fromkeys(("tinyint", "smallint", "mediumint", "int", "integer", "bigint"), _as_int),
    **dict.fromkeys(("decimal", "numeric", "dec", "fixed"), _as_decimal),
    **dict.fromkeys(("float", "double", "real"), _as_float),
    "datetime": _as_datetime,
    "timestamp": _as_datetime,
    "date": _as_date,
    "time": _as_str,
    "year": _as_int,
    "json": _as_json,
    "bit": _as_int,
    **dict.fromkeys(
        (
            "char", "varchar", "tinytext", "text", "mediumtext", "longtext",
            "varbinary", "tinyblob", "blob", "mediumblob", "longblob",
        ),
        _as_str,
    ),
}  # fmt: skip

#: java.sql.Types numbers, used only when mysqlType is missing or unknown.
_BY_SQL: dict[int, Converter] = {
    -7: _as_int,  # BIT
    -6: _as_int,  # TINYINT
    5: _as_int,  # SMALLINT
    4: _as_int,  # INTEGER
    -5: _as_int,  # BIGINT
    6: _as_float,  # FLOAT
    7: _as_float,  # REAL
    8: _as_float,  # DOUBLE
    2: _as_decimal,  # NUMERIC
    3: _as_decimal,  # DECIMAL
    16: _as_bool,  # BOOLEAN
    91: _as_date,  # DATE
    93: _as_datetime,  # TIMESTAMP (MySQL DATETIME and TIMESTAMP)
}

_cache: dict[tuple[str | None, int | None, bool], Converter] = {}


def base_type(mysql_type: str) -> str:
    """`bigint(20) unsigned` -> `bigint`; `enum('a','b')` -> `enum`."""
    end = len(mysql_type)
    for stop in ("(", " "):
        found = mysql_type.find(stop)
        if 0 <= found < end:
            end = found
    return mysql_type[:end].strip().lower()


def converter_for(
    mysql_type: str | None, sql_type: int | None, tinyint1_as_bool: bool = False
) -> Converter:
    """The converter for a column type; built once per distinct type and cached."""
    key = (mysql_type, sql_type, tinyint1_as_bool)
    found = _cache.get(key)
    if found is None:
        found = _cache[key] = _build(mysql_type, sql_type, tinyint1_as_bool)
    return found


def _build(mysql_type: str | None, sql_type: int | None, tinyint1_as_bool: bool) -> Converter:
    if mysql_type:
        base = base_type(mysql_type)
        if tinyint1_as_bool and (
            base in ("bool", "boolean") or (base == "tinyint" and "(1)" in mysql_type)
        ):
            return _as_bool
        if base in ("bool", "boolean"):
            return _as_int
        if base == "enum":
            return _enum_converter(labels(mysql_type))
        if base == "set":
            return _set_converter(labels(mysql_type))
        if base == "binary":
            return _binary_converter(mysql_type)
        found = _BY_MYSQL.get(base)
        if found is not None:
            return found
    if sql_type is not None:
        return _BY_SQL.get(sql_type, _as_str)
    return _as_str


_VALID_VALUE_TYPES = frozenset({str, type(None)})


class RowTyper:
    """Types the rows of one message: the converters of its columns, looked up once."""

    __slots__ = ("_by_name", "_position", "_typed")

    def __init__(self, converters: dict[str, Converter], position: Position) -> None:
        # Columns that stay strings need no call at all: rows start as a copy of Canal's.
        self._by_name = {name: conv for name, conv in converters.items() if conv is not _as_str}
        self._typed = tuple(self._by_name.items())
        self._position = position

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Canal's strings of one row -> typed values; unknown columns stay strings."""
        if not _VALID_VALUE_TYPES.issuperset(map(type, raw.values())):
            self._reject_value_types(raw)
        row = raw.copy()
        name, value = "", None
        try:
            if len(raw) < len(self._typed):  # an UPDATE's old values: few columns
                by_name = self._by_name
                for name, value in raw.items():
                    convert = by_name.get(name)
                    if convert is not None and value is not None:
                        row[name] = convert(value)
            else:
                for name, convert in self._typed:
                    value = raw.get(name)
                    if value is not None:
                        row[name] = convert(value)
        except (ValueError, ArithmeticError) as exc:
            raise CanalDecodeError(
                self._position, f"column {name!r}: {value!r} is not a valid value ({exc})"
            ) from exc
        return row

    def _reject_value_types(self, raw: dict[str, Any]) -> None:
        for name, value in raw.items():
            if type(value) not in _VALID_VALUE_TYPES:
                raise CanalDecodeError(
                    self._position,
                    f"column {name!r}: value must be a string or null, got {value!r}",
                )
