"""The decoder's fast paths give what the plain rules give, for any input: the typer compiled
per schema, the one-pass typer, the datetime shortcut, and what is kept from one record for the
next (key names, execution times, typers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from esupdater.canal import CanalDecodeError, CanalDecoder, flat_message
from esupdater.canal.events import recent_times
from esupdater.canal.values import RowTyper, converter_for
from esupdater.change import Position
from esupdater.mysql_types import ZERO_DATE, as_datetime, as_text

POSITION = Position("fast", 1, 9)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCHEMA = {
    "id": "bigint(20)", "name": "varchar(8)", "at": "datetime(3)", "price": "decimal(6,2)",
    "size": "enum('s','m')", "flag": "tinyint(1)", "doc": "json",
}  # fmt: skip
CONVERTERS = {name: converter_for(kind, None) for name, kind in SCHEMA.items()}
#: Values each column takes, valid ones first; any column may also get a wrong one.
GOOD = {
    "id": ["7", "-3", "18446744073709551615"], "name": ["x", "", "7"],
    "at": ["2024-03-01 12:30:45.120", "0000-00-00 00:00:00"], "price": ["12.50", "-1E+3"],
    "size": ["1", "2", "0", "m"], "flag": ["0", "1"], "doc": ['{"a": 1}', "3"],
}  # fmt: skip
BAD = ["x", "", " 5x", "NaN", "2024-03-01T12:30:45", "2024-02-30 00:00:00", "{", "9", 5, 1.5,
       True, [], {}]  # fmt: skip


@st.composite
def rows(draw: st.DrawFn) -> dict[str, Any]:
    """A whole row, a few of its columns (an UPDATE's old values) or an odd one, mostly valid."""
    names = draw(st.permutations(list(SCHEMA)) | st.permutations([*SCHEMA, "extra"]) | st.lists(
        st.sampled_from([*SCHEMA, "extra"]), unique=True, max_size=len(SCHEMA) + 1))
    row: dict[str, Any] = {
        name: draw(st.sampled_from([*GOOD.get(name, ["?"]), None])) for name in names
    }
    for name in draw(st.lists(st.sampled_from(names), max_size=2)) if names else ():
        row[name] = draw(st.sampled_from(BAD))
    return row


def reference(raw: dict[str, Any]) -> dict[str, Any]:
    """The typing rules as written before the fast paths: every value's type checked first (in
    the row's order), then the conversions, in the schema's order for a whole row."""
    for name, value in raw.items():
        if type(value) not in (str, type(None)):
            raise CanalDecodeError(
                POSITION, f"column {name!r}: value must be a string or null, got {value!r}"
            )
    typed = {name: convert for name, convert in CONVERTERS.items() if convert is not as_text}
    order = list(raw) if len(raw) < len(typed) else list(typed)
    row = raw.copy()
    for name in order:
        if name in typed and raw.get(name) is not None:
            try:
                row[name] = typed[name](raw[name])
            except (ValueError, ArithmeticError) as exc:
                raise CanalDecodeError(
                    POSITION, f"column {name!r}: {raw[name]!r} is not a valid value ({exc})"
                ) from exc
    return row


def outcome(type_row: Any, raw: dict[str, Any]) -> tuple[Any, ...]:
    """A typed row as its items and their types (key order included), or the error's text."""
    try:
        row = type_row(raw)
    except CanalDecodeError as exc:
        return ("error", str(exc), type(exc.__cause__))
    return ("row", list(row.items()), [type(value) for value in row.values()])


@FUZZ
@given(rows())
@example({"price": "x", "id": "x"})  # a few columns: the first bad one in the row's order
@example({**dict.fromkeys(reversed(SCHEMA), "1"), "id": "x", "price": "x"})  # the schema's
@example({"id": "x", "name": 5})  # a value of the wrong type first, wherever it is
def test_every_typer_types_any_row_as_the_rules_do(raw: dict[str, Any]) -> None:
    typer = RowTyper(CONVERTERS, POSITION)
    compiled = typer.compiled()
    expected = outcome(reference, raw)

    assert outcome(lambda row: compiled(row, POSITION), raw) == expected
    assert outcome(lambda row: typer.typed(row, POSITION), raw) == expected
    assert outcome(typer, raw) == expected


@pytest.mark.parametrize(
    "name", ["a'b", 'a"b', "a\nb", "x) or (1", "__import__('os').system('false')", "{0}", "é"]
)
def test_a_column_name_never_becomes_code(name: str) -> None:
    record = flat_message("db", "names", "INSERT", [{name: "7", "id": "1"}],
                          mysql_types={name: "int", "id": "int"})

    [change] = CanalDecoder().decode(record, POSITION)

    assert change.row == {name: 7, "id": 1}


_DATETIME_TEXT = st.text(alphabet="0123456789-: T.W+Z,\u0661", max_size=28)
_DATETIME_LIKE = st.builds(
    lambda date, sep, time: date + sep + time,
    st.sampled_from(["2024-03-01", "0000-00-00", "2024-02-30", "20240301", "2024W011", "2024-W01",
                     "2024 03-01", "2024-03 01"]),
    st.sampled_from([" ", "T", "  ", ""]),
    st.sampled_from(["12:30:45", "12:30:45.120", "12", "12 30:45", "12:30:45+01:00", "1", ""]),
)


def datetime_rules(value: str) -> str | None:
    """`as_datetime` as documented (docs/types.md), one rule after the other."""
    if value.startswith(ZERO_DATE):
        return None
    if len(value) < len("YYYY-MM-DD HH:MM:SS") or value[10] != " ":
        raise ValueError(f"not a datetime: {value!r}")
    datetime.fromisoformat(value)
    return value[:10] + "T" + value[11:]


def converted(convert: Any, value: str) -> tuple[Any, ...]:
    try:
        return ("value", convert(value))
    except ValueError as exc:
        return ("error", str(exc))


@FUZZ
@given(_DATETIME_TEXT | _DATETIME_LIKE)
def test_the_datetime_shortcut_gives_what_the_rules_give(value: str) -> None:
    assert converted(as_datetime, value) == converted(datetime_rules, value)


def test_a_zero_datetime_is_still_none_and_a_datetime_with_t_still_refused() -> None:
    assert as_datetime("0000-00-00 00:00:00") is None
    with pytest.raises(ValueError, match="not a datetime"):
        as_datetime("2024-03-01T12:30:45")


def decode(pk_names: Any, offset: int = 0, **fields: Any) -> list[Any]:
    message = orjson.loads(flat_message("db", "t", "INSERT", [{"id": "1", "v": "2"}],
                                        mysql_types={"id": "int", "v": "int"}))
    message.update(pkNames=pk_names, **fields)
    return CanalDecoder().decode(orjson.dumps(message), Position("t", 0, offset))


def test_key_names_kept_from_the_last_record_are_its_own() -> None:
    for pk_names in (["id"], ["id", "v"], None, [], ["id"], ["v"], ["id"]):
        [change] = decode(pk_names)
        assert change.pk_names == tuple(pk_names or ())
    with pytest.raises(CanalDecodeError, match="pkNames must hold strings"):
        decode([1])
    with pytest.raises(CanalDecodeError, match="pkNames must hold strings"):
        decode(["id", 1])
    assert decode(["id"])[0].pk == "1"


def test_a_record_without_the_optional_fields_still_decodes() -> None:
    message = orjson.loads(flat_message("db", "t", "INSERT", [{"id": "1"}],
                                        mysql_types={"id": "int"}))
    for name in ("isDdl", "es", "pkNames", "sql"):
        del message[name]

    [change] = CanalDecoder().decode(orjson.dumps(message), POSITION)

    assert (change.row, change.pk_names, change.executed_at) == ({"id": 1}, (), None)
    del message["data"]
    assert CanalDecoder().decode(orjson.dumps(message), POSITION) == []


def test_execution_times_kept_are_bounded_and_each_records_own() -> None:
    start = 1_700_000_000_000
    for es_ms in range(start, start + 1500, 1):
        [change] = decode(["id"], es=es_ms)
        assert change.executed_at == datetime.fromtimestamp(es_ms / 1000, tz=UTC)
    assert 0 < len(recent_times) <= 1024
    with pytest.raises(CanalDecodeError, match="out of range"):
        decode(["id"], es=10**18)
