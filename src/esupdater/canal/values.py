"""Typing Canal's string values: the hot path, one cached converter per column type.

Canal sends every value as a string (or null) with the column's `mysqlType` (e.g.
`bigint(20) unsigned`) and `sqlType` (a java.sql.Types number). The rules by MySQL type are
esupdater.mysql_types, shared with any other source of rows; here is only what is Canal's
own: ENUM as its index, SET as its bitmask, BINARY(n) without its trailing zero bytes, and
the fallback by `sqlType` when `mysqlType` is missing or unknown. The converter for a type is
built once and kept in a dict; converting a value is then one call, with no regex.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from esupdater.canal.errors import CanalDecodeError
from esupdater.change import Position
from esupdater.mysql_types import (
    Converter,
    as_bool,
    as_date,
    as_datetime,
    as_decimal,
    as_float,
    as_int,
    as_set,
    as_text,
    base_type,
    binary_size,
    find_converter,
    is_digits,
    labels,
)


def _binary_converter(mysql_type: str) -> Converter:
    """BINARY(n): the binlog drops a value's trailing zero bytes, so Canal sends x'01000000' as
    one character and x'00000000' as ""; padded back to n, it is MySQL's value again."""
    size = binary_size(mysql_type)
    if size is None:
        return as_text

    def convert(value: str) -> str:
        return value.ljust(size, "\x00")

    return convert


def _enum_converter(names: tuple[str, ...]) -> Converter:
    """Canal sends an ENUM as its 1-based index (0 is MySQL's '' for an invalid value)."""

    def convert(value: str) -> str:
        if not is_digits(value):
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
        if not is_digits(value):
            return as_set(value)  # already the comma-separated members
        mask = int(value)
        if mask >> len(names):
            raise ValueError(f"set bitmask {mask} has bits beyond the {len(names)} members")
        return [name for bit, name in enumerate(names) if mask >> bit & 1]

    return convert


#: java.sql.Types numbers, used only when mysqlType is missing or unknown.
_BY_SQL: dict[int, Converter] = {
    -7: as_int,  # BIT
    -6: as_int,  # TINYINT
    5: as_int,  # SMALLINT
    4: as_int,  # INTEGER
    -5: as_int,  # BIGINT
    6: as_float,  # FLOAT
    7: as_float,  # REAL
    8: as_float,  # DOUBLE
    2: as_decimal,  # NUMERIC
    3: as_decimal,  # DECIMAL
    16: as_bool,  # BOOLEAN
    91: as_date,  # DATE
    93: as_datetime,  # TIMESTAMP (MySQL DATETIME and TIMESTAMP)
}

#: Canal's own wire forms, by base MySQL type; the other types follow esupdater.mysql_types.
_CANAL_FORMS: dict[str, Callable[[str], Converter]] = {
    "enum": lambda mysql_type: _enum_converter(labels(mysql_type)),
    "set": lambda mysql_type: _set_converter(labels(mysql_type)),
    "binary": _binary_converter,
}

_cache: dict[tuple[str | None, int | None, bool], Converter] = {}


def converter_for(
    mysql_type: str | None, sql_type: int | None, tinyint1_as_bool: bool = False
) -> Converter:
    """The converter for a column as Canal describes it; built once per distinct type, cached."""
    key = (mysql_type, sql_type, tinyint1_as_bool)
    found = _cache.get(key)
    if found is None:
        found = _cache[key] = _build(mysql_type, sql_type, tinyint1_as_bool)
    return found


def _build(mysql_type: str | None, sql_type: int | None, tinyint1_as_bool: bool) -> Converter:
    if mysql_type:
        canal_form = _CANAL_FORMS.get(base_type(mysql_type))
        if canal_form is not None:
            return canal_form(mysql_type)
        found = find_converter(mysql_type, tinyint1_as_bool)
        if found is not None:
            return found
    if sql_type is not None:
        return _BY_SQL.get(sql_type, as_text)
    return as_text


_VALID_VALUE_TYPES = frozenset({str, type(None)})

#: Canal's strings of one row -> its typed values; an error names the record at `position`.
TypeRow = Callable[[dict[str, Any], Position], dict[str, Any]]


class RowTyper:
    """Types the rows of one schema: the converters of its columns, looked up once."""

    __slots__ = ("_by_name", "_names", "_position")

    def __init__(self, converters: dict[str, Converter], position: Position) -> None:
        # Columns that stay strings need no call at all: rows start as a copy of Canal's.
        self._by_name = {name: conv for name, conv in converters.items() if conv is not as_text}
        self._names = tuple(converters)
        self._position = position

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Canal's strings of one row -> typed values; unknown columns stay strings."""
        return self.typed(raw, self._position)

    def typed(self, raw: dict[str, Any], position: Position) -> dict[str, Any]:
        """`__call__` for a record at `position`: one typer serves every record of a schema,
        with no object made per record. Any row: `compiled`'s fallback, and an UPDATE's old
        values. One pass: each value's type is checked where it is converted."""
        row = raw.copy()
        by_name = self._by_name
        try:
            for name, value in raw.items():
                if value.__class__ is str:
                    convert = by_name.get(name)
                    if convert is not None:
                        row[name] = convert(value)
                elif value is not None:
                    break  # neither a string nor null
            else:
                return row
        except (ValueError, ArithmeticError):
            self._reject(raw, position)
        self._reject(raw, position)

    def compiled(self) -> TypeRow:
        """`typed` as one straight-line function for this schema (built once per schema)."""
        return _compile(self._names, self._by_name, self.typed)

    def _reject(self, raw: dict[str, Any], position: Position) -> NoReturn:
        """The error for a row `typed` refused, whichever pass found it: the first value that
        is neither a string nor null; else the first that does not convert, in the schema's
        order for a whole row, in the row's for an UPDATE's few old values."""
        for name, value in raw.items():
            if type(value) not in _VALID_VALUE_TYPES:
                raise CanalDecodeError(
                    position, f"column {name!r}: value must be a string or null, got {value!r}"
                )
        few = len(raw) < len(self._by_name)
        for name in raw if few else self._by_name:
            convert, value = self._by_name.get(name), raw.get(name)
            if convert is None or value is None:
                continue
            try:
                convert(value)
            except (ValueError, ArithmeticError) as exc:
                raise CanalDecodeError(
                    position, f"column {name!r}: {value!r} is not a valid value ({exc})"
                ) from exc
        raise CanalDecodeError(position, "a value could not be typed")  # converters are pure


# The lines of a compiled typer. Only column numbers are written into them: a column's name
# and converter reach the code as the values of `name_<i>` and `convert_<i>`, never as text.
_HEAD = """\
def type_row(raw, position):
    if len(raw) != {columns}:
        return fallback(raw, position)
    row = raw.copy()
    try:
"""
_CONVERTED = """\
        value = raw[name_{i}]
        if value.__class__ is str:
            row[name_{i}] = convert_{i}(value)
        elif value is not None:
            return fallback(raw, position)
"""
_KEPT = """\
        value = raw[name_{i}]
        if value.__class__ is not str and value is not None:
            return fallback(raw, position)
"""
_TAIL = """\
    except (KeyError, ValueError, ArithmeticError):
        return fallback(raw, position)
    return row
"""


def _compile(names: tuple[str, ...], by_name: dict[str, Converter], fallback: TypeRow) -> TypeRow:
    """A row of exactly the schema's columns, each a string or null and valid, typed with no
    loop, no separate pass over the values' types and no per-value lookup.

    Any other row (an UPDATE's few old values, an unknown or a missing column, a value that is
    not a string, one that does not convert) goes to `fallback`, which types it the same way
    or raises the error that names the column: this code never decides an outcome of its own.
    """
    if not names:
        return fallback
    namespace: dict[str, Any] = {"fallback": fallback}
    lines = [_HEAD.format(columns=len(names))]
    for i, name in enumerate(names):
        namespace[f"name_{i}"] = name
        convert = by_name.get(name)
        if convert is None:
            lines.append(_KEPT.format(i=i))
        else:
            namespace[f"convert_{i}"] = convert
            lines.append(_CONVERTED.format(i=i))
    lines.append(_TAIL)
    exec("".join(lines), namespace)
    type_row: TypeRow = namespace["type_row"]
    return type_row
