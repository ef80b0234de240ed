"""Real Canal bytes: what Canal 1.1.7 published for MariaDB 10.11 binlog events.

tests/fixtures/capture_canal_protobuf.py wrote them from the local stack: a CREATE TABLE, then
one transaction with a two-row INSERT, an UPDATE of both rows and a DELETE, published twice,
as protobuf (flatMessage=false, one partition, transaction entries kept) under
tests/fixtures/canal_protobuf/ and as flat JSON (partitioned by primary key) under
tests/fixtures/canal_flat/. The builders in esupdater.canal only imitate Canal; these are the
bytes Canal itself writes.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from esupdater.canal import CanalDecoder
from esupdater.canal import canal_pb2 as pb
from esupdater.change import Change, Position

DECODER = CanalDecoder()
FIXTURES = Path(__file__).parents[1] / "fixtures"
TABLE = "canal_fixture"

ROW_1 = {
    "id": 1, "name": "Zoë ☕", "price": Decimal("12.50"), "qty": None, "flag": 1, "size": "m",
    # MariaDB's JSON is LONGTEXT: Canal says `longtext`, so the text is not parsed.
    "doc": '{"a": [1, 2]}',
    "seen": "2024-03-01T12:30:45.120", "born": "2024-02-29", "stamp": "2024-03-01T10:00:00",
    "big": 18446744073709551615,
}
ROW_2 = {
    "id": 2, "name": "bob", "price": Decimal("0.00"), "qty": 7, "flag": 0, "size": "s",
    "doc": None, "seen": "2024-03-02T00:00:00.000", "born": None, "stamp": None, "big": 0,
}


def records(form: str) -> list[bytes]:
    found = sorted((FIXTURES / f"canal_{form}").iterdir())
    assert found, f"no fixtures in {FIXTURES / f'canal_{form}'}"
    return [path.read_bytes() for path in found]


def decoded(form: str) -> list[Change]:
    topic = "canal_shop_pb" if form == "protobuf" else "canal_shop"
    return [change for offset, value in enumerate(records(form))
            for change in DECODER.decode(value, Position(topic, 0, offset))]


def row_changes(form: str) -> list[Change]:
    return [change for change in decoded(form) if not change.is_ddl]


def test_the_protobuf_records_hold_the_rows_in_binlog_order() -> None:
    assert [(c.type, c.database, c.table, c.pk) for c in row_changes("protobuf")] == [
        ("INSERT", "shop", TABLE, "1"),
        ("INSERT", "shop", TABLE, "2"),
        ("UPDATE", "shop", TABLE, "1"),
        ("UPDATE", "shop", TABLE, "2"),
        ("DELETE", "shop", TABLE, "2"),
    ]


def test_inserted_rows_are_typed_from_canals_mysql_types() -> None:
    first, second = row_changes("protobuf")[:2]
    assert first.row == ROW_1
    assert second.row == ROW_2
    assert (first.old, first.changed, first.pk_names) == (None, frozenset(), ("id",))
    assert second.raw["price"] == "0.0"  # Canal's text for 0.00; the Decimal is equal
    assert second.raw["doc"] is None  # NULL, not ""


def test_an_update_carries_the_old_values_of_the_changed_columns_only() -> None:
    first, second = row_changes("protobuf")[2:4]
    assert first.row == {**ROW_1, "name": "Zoë ☕!", "qty": 3}
    assert first.old == {"name": "Zoë ☕", "qty": None}  # NULL before
    assert first.changed == {"name", "qty"}
    assert second.row == {**ROW_2, "name": "bob!", "qty": 3}
    assert second.old == {"name": "bob", "qty": 7}


def test_a_delete_carries_the_row_as_it_was() -> None:
    delete = row_changes("protobuf")[4]
    assert delete.row == {**ROW_2, "name": "bob!", "qty": 3}
    assert (delete.old, delete.changed, delete.pk) == (None, frozenset(), "2")


def test_the_create_table_record_is_one_ddl_change() -> None:
    (create,) = DECODER.decode(records("protobuf")[0], Position("canal_shop_pb", 0, 0))
    assert (create.type, create.database, create.table, create.is_ddl) == (
        "CREATE", "shop", TABLE, True)
    assert create.sql.startswith(f"CREATE TABLE {TABLE} (")
    assert create.row == {}


def test_mariadb_statement_annotations_are_skipped_not_routed_as_ddl() -> None:
    # MariaDB logs each statement's text before its rows (binlog_annotate_row_events, on by
    # default); Canal passes it on as a QUERY entry, not DDL, with neither schema nor table.
    packet = pb.Packet.FromString(records("protobuf")[1])
    entries = [pb.Entry.FromString(raw) for raw in pb.Messages.FromString(packet.body).messages]
    queries = [
        change for change in (pb.RowChange.FromString(e.storeValue) for e in entries
                              if e.entryType == pb.ROWDATA)
        if change.eventType == pb.QUERY
    ]
    assert [(q.isDdl, q.sql.split()[0]) for q in queries] == [
        (False, "INSERT"), (False, "UPDATE"), (False, "DELETE")
    ]
    flat_queries = [orjson.loads(value) for value in records("flat")
                    if orjson.loads(value)["type"] == "QUERY"]
    assert [(q["database"], q["table"], q["isDdl"]) for q in flat_queries] == [("", "", False)] * 3

    for form in ("protobuf", "flat"):
        assert [c for c in decoded(form) if c.type == "QUERY"] == [], form


def test_the_transaction_end_entry_is_there_and_yields_no_change() -> None:
    packet = pb.Packet.FromString(records("protobuf")[1])
    assert packet.type == pb.Packet.MESSAGES
    entries = [pb.Entry.FromString(raw) for raw in pb.Messages.FromString(packet.body).messages]
    # MariaDB has no BEGIN query event in a row-based transaction: Canal sends only the end.
    assert [e.entryType for e in entries].count(pb.TRANSACTIONEND) == 1
    assert pb.TRANSACTIONBEGIN not in [e.entryType for e in entries]
    changes = DECODER.decode(records("protobuf")[1], Position("canal_shop_pb", 0, 1))
    assert len(changes) == 5  # five rows; nothing for the statement texts or the end


@pytest.mark.parametrize("field", ["row", "old", "changed", "pk_names", "raw", "executed_at"])
def test_the_protobuf_and_flat_forms_of_the_same_events_decode_alike(field: str) -> None:
    def by_row(form: str) -> dict[tuple[str, str], object]:
        return {(c.type, c.pk): getattr(c, field) for c in row_changes(form)}

    assert by_row("protobuf") == by_row("flat")
    assert len(by_row("flat")) == 5


def test_the_protobuf_and_flat_forms_carry_the_same_statements() -> None:
    def statements(form: str) -> list[tuple[str, str, str]]:
        return sorted((c.type, c.table, c.sql) for c in decoded(form) if c.is_ddl)

    assert statements("protobuf") == statements("flat")
