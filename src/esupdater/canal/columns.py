"""Canal's Column on the wire, written by hand for the builders: rows by the million.

Generated classes would cost microseconds per column; here the fields other than the value
are encoded once per column and reused. Fields are written in field-number order, as
protobuf-java does, so the bytes are what Canal writes.
"""

from __future__ import annotations

from collections.abc import Mapping

from esupdater.canal import canal_pb2 as pb
from esupdater.mysql_types import base_type

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
ROW_DATA_TAG = b"\x62"  # RowChange.rowDatas, field 12
_VALUE_TAG = b"\x42"  # Column.value, field 8
_ONE_BYTE = 0x80  # a varint byte holds 7 bits
_SMALL_VARINTS = [bytes((number,)) for number in range(_ONE_BYTE)]


def sql_type_for(mysql_type: str) -> int:
    """The java.sql.Types number Canal would report for a MySQL column type."""
    return _SQL_TYPES.get(base_type(mysql_type), _VARCHAR)


class ColumnCodec:
    """Encodes the RowData of one table's rows; the fixed fields of each column once."""

    def __init__(
        self,
        mysql_types: Mapping[str, str],
        sql_types: Mapping[str, int] | None,
        keys: frozenset[str],
    ) -> None:
        self._mysql_types = mysql_types
        self._sql_types = sql_types or {}
        self._keys = keys
        # name -> (head if not updated, head if updated, head of a NULL..., ..., tail)
        self._parts: dict[str, tuple[bytes, bytes, bytes, bytes, bytes]] = {}

    def row_data(self, type_: str, row: Row, row_old: Row | None) -> list[bytes]:
        """RowData as Canal fills it: INSERT after-image, DELETE before-image, UPDATE both."""
        if type_ == "UPDATE":
            changed = row_old or {}
            before = {name: changed.get(name, value) for name, value in row.items()}
            return self._columns(_BEFORE_TAG, before, frozenset()) + self._columns(
                _AFTER_TAG, row, frozenset(changed)
            )
        if type_ == "DELETE":
            return self._columns(_BEFORE_TAG, row, frozenset())
        # Canal flags every column of an INSERT as updated (nothing to compare it with).
        return self._columns(_AFTER_TAG, row, frozenset(row))

    def _columns(self, tag: bytes, row: Row, updated: frozenset[str]) -> list[bytes]:
        parts: list[bytes] = []
        known = self._parts
        small = _SMALL_VARINTS  # inlined: this loop runs once per column of every row
        for name, value in row.items():
            fixed = known.get(name) or self._fixed(name)
            if value is None:
                column = fixed[2 + (name in updated)] + fixed[4]
            elif value:
                encoded = value.encode()
                n = len(encoded)
                size = small[n] if n < _ONE_BYTE else varint(n)
                column = b"".join((fixed[name in updated], _VALUE_TAG, size, encoded, fixed[4]))
            else:  # proto3 does not write an empty string
                column = fixed[name in updated] + fixed[4]
            n = len(column)
            parts += (tag, small[n] if n < _ONE_BYTE else varint(n), column)
        return parts

    def _fixed(self, name: str) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        mysql_type = self._mysql_types.get(name, "varchar(255)")
        sql_type = self._sql_types.get(name, sql_type_for(mysql_type))
        index = list(self._mysql_types).index(name) if name in self._mysql_types else 0
        heads = [
            pb.Column(
                index=index,
                sqlType=sql_type,
                name=name,
                isKey=name in self._keys,
                updated=updated,
                isNull=is_null,
            ).SerializeToString()  # fields 1-6, before the value (8)
            for is_null in (False, True)
            for updated in (False, True)
        ]
        tail = pb.Column(mysqlType=mysql_type).SerializeToString()  # field 10, after the value
        fixed = self._parts[name] = (heads[0], heads[1], heads[2], heads[3], tail)
        return fixed


def varint(number: int) -> bytes:
    if number < _ONE_BYTE:
        return _SMALL_VARINTS[number]
    out = bytearray()
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)
