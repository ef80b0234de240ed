"""What the Canal decoder makes of Canal's row events, the same for flat JSON and protobuf."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from esupdater.canal import CanalDecoder, flat_message, protobuf_message
from esupdater.change import Change, Position

POSITION = Position("canal.shop", 3, 42)
ES_MS = 1_700_000_000_123
TYPES = {"id": "bigint(20)", "name": "varchar(64)", "price": "decimal(10,2)", "born": "date"}
ALICE = {"id": "1", "name": "alice", "price": "9.99", "born": "1990-05-01"}
BOB = {"id": "2", "name": "bob", "price": "0.50", "born": None}

Builder = Callable[..., bytes]


@pytest.fixture(params=[flat_message, protobuf_message], ids=["flat", "protobuf"])
def build(request: pytest.FixtureRequest) -> Builder:
    builder: Builder = request.param
    return builder


def decode(value: bytes, **options: Any) -> list[Change]:
    return CanalDecoder(**options).decode(value, POSITION)


def test_an_insert_gives_one_typed_change(build: Builder) -> None:
    [change] = decode(build("shop", "users", "INSERT", [ALICE], mysql_types=TYPES, es_ms=ES_MS))

    assert change.database == "shop"
    assert change.table == "users"
    assert change.type == "INSERT"
    assert change.row == {"id": 1, "name": "alice", "price": Decimal("9.99"), "born": "1990-05-01"}
    assert change.old is None
    assert change.changed == frozenset()
    assert change.is_ddl is False
    assert change.sql == ""


def test_raw_keeps_canals_untouched_strings(build: Builder) -> None:
    [change] = decode(build("shop", "users", "INSERT", [BOB], mysql_types=TYPES))

    assert change.raw == BOB


def test_a_null_value_is_none(build: Builder) -> None:
    [change] = decode(build("shop", "users", "INSERT", [BOB], mysql_types=TYPES))

    assert change.row["born"] is None


def test_executed_at_is_canals_es_as_aware_utc(build: Builder) -> None:
    [change] = decode(build("shop", "users", "INSERT", [ALICE], mysql_types=TYPES, es_ms=ES_MS))

    assert change.executed_at == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)


def test_the_change_knows_its_kafka_position(build: Builder) -> None:
    [change] = decode(build("shop", "users", "INSERT", [ALICE], mysql_types=TYPES))

    assert (change.topic, change.partition, change.offset) == ("canal.shop", 3, 42)


def test_each_row_of_a_record_is_its_own_change_in_order(build: Builder) -> None:
    changes = decode(build("shop", "users", "INSERT", [ALICE, BOB], mysql_types=TYPES))

    assert [(c.row["id"], c.row_index) for c in changes] == [(1, 0), (2, 1)]


def test_an_update_gives_the_old_values_of_the_changed_columns(build: Builder) -> None:
    old = [{"name": "alicia", "price": "8.00"}]

    [change] = decode(build("shop", "users", "UPDATE", [ALICE], old=old, mysql_types=TYPES))

    assert change.row["name"] == "alice"
    assert change.old == {"name": "alicia", "price": Decimal("8.00")}
    assert change.changed == frozenset({"name", "price"})


def test_an_update_from_null_has_none_as_the_old_value(build: Builder) -> None:
    [change] = decode(
        build("shop", "users", "UPDATE", [ALICE], old=[{"born": None}], mysql_types=TYPES)
    )

    assert change.old == {"born": None}
    assert change.changed == frozenset({"born"})


def test_each_updated_row_has_its_own_old_values(build: Builder) -> None:
    old = [{"name": "a"}, {"price": "1.00"}]

    changes = decode(build("shop", "users", "UPDATE", [ALICE, BOB], old=old, mysql_types=TYPES))

    assert [c.changed for c in changes] == [frozenset({"name"}), frozenset({"price"})]


def test_a_delete_carries_the_before_image_as_row(build: Builder) -> None:
    [change] = decode(build("shop", "users", "DELETE", [ALICE], mysql_types=TYPES))

    assert change.is_delete
    assert change.row["name"] == "alice"
    assert change.old is None


def test_pk_names_come_from_canal_and_pk_joins_them(build: Builder) -> None:
    row = {"order_id": "7", "line": "3", "sku": "X"}
    types = {"order_id": "int(11)", "line": "int(11)", "sku": "varchar(8)"}

    [change] = decode(
        build("shop", "lines", "INSERT", [row], pk_names=("order_id", "line"), mysql_types=types)
    )

    assert change.pk_names == ("order_id", "line")
    assert change.pk == "7:3"


def test_a_table_without_primary_key_has_empty_pk_names(build: Builder) -> None:
    [change] = decode(build("shop", "log", "INSERT", [ALICE], pk_names=(), mysql_types=TYPES))

    assert change.pk_names == ()
    assert change.pk == ""


def test_ddl_gives_one_change_with_the_statement(build: Builder) -> None:
    sql = "ALTER TABLE users ADD COLUMN age int"

    [change] = decode(
        build("shop", "users", "ALTER", [], mysql_types={}, is_ddl=True, sql=sql, es_ms=ES_MS)
    )

    assert change.is_ddl
    assert change.type == "ALTER"
    assert change.sql == sql
    assert change.row == {}
    assert change.raw == {}
    assert change.old is None
    assert change.executed_at is not None


@pytest.mark.parametrize(
    "kind", ["CREATE", "ALTER", "ERASE", "TRUNCATE", "RENAME", "CINDEX", "DINDEX"]
)
def test_ddl_types_are_ddl_even_without_the_isddl_flag(build: Builder, kind: str) -> None:
    [change] = decode(build("shop", "users", kind, [], mysql_types={}, sql="x"))

    assert change.is_ddl
    assert change.type == kind


def test_the_ddl_types_handlers_can_ask_for_are_the_ones_the_decoder_makes() -> None:
    """One set of DDL types: what `types=` accepts, what the decoder and the barrier use."""
    from esupdater import change, routing

    assert routing.DDL_TYPES is change.DDL_TYPES
    assert routing.KNOWN_TYPES == change.ROW_TYPES | change.DDL_TYPES


def test_a_query_flagged_ddl_is_ddl(build: Builder) -> None:
    [change] = decode(build("shop", "users", "QUERY", [], mysql_types={}, is_ddl=True,
                            sql="CREATE INDEX i ON users (name)"))

    assert change.is_ddl
    assert (change.type, change.sql) == ("QUERY", "CREATE INDEX i ON users (name)")


def test_a_query_not_flagged_ddl_is_a_statement_annotation_and_skipped(build: Builder) -> None:
    # MariaDB's binlog_annotate_row_events: a DML statement's text, its rows come apart.
    assert decode(build("", "", "QUERY", [], mysql_types={}, sql="UPDATE users SET v = 1")) == []


def test_a_row_event_without_rows_gives_nothing(build: Builder) -> None:
    assert decode(build("shop", "users", "INSERT", [], mysql_types=TYPES)) == []


def test_tinyint1_stays_an_int_unless_asked(build: Builder) -> None:
    value = build("shop", "t", "INSERT", [{"id": "1", "ok": "1"}], mysql_types={
        "id": "int(11)", "ok": "tinyint(1)"
    })  # fmt: skip

    assert decode(value)[0].row["ok"] == 1
    assert decode(value, tinyint1_as_bool=True)[0].row["ok"] is True


def test_both_forms_decode_to_the_same_changes() -> None:
    options: dict[str, Any] = {
        "old": [{"name": "x"}, {"born": "2000-01-01"}],
        "mysql_types": TYPES,
        "es_ms": ES_MS,
    }

    flat = decode(flat_message("shop", "users", "UPDATE", [ALICE, BOB], **options))
    binary = decode(protobuf_message("shop", "users", "UPDATE", [ALICE, BOB], **options))

    assert flat == binary


def test_an_update_of_the_primary_key_names_the_key_it_had(build: Builder) -> None:
    renumbered = {**ALICE, "id": "100"}
    [moved, plain] = decode(build("shop", "users", "UPDATE", [renumbered, BOB],
                                  old=[{"id": "1", "name": "al"}, {"name": "b"}],
                                  mysql_types=TYPES))

    assert (moved.pk, moved.old_pk) == ("100", "1")  # the document under "1" is stale
    assert (plain.pk, plain.old_pk) == ("2", None)
    assert (moved.key, moved.old_key) == (("shop", "users", "100"), ("shop", "users", "1"))
    assert plain.old_key is None


def test_a_composite_key_that_changed_in_one_column_keeps_the_others(build: Builder) -> None:
    [change] = decode(build("shop", "order_items", "UPDATE", [{"order": "7", "line": "3"}],
                            old=[{"line": "2"}], pk_names=("order", "line"),
                            mysql_types={"order": "int", "line": "int"}))

    assert (change.pk, change.old_pk) == ("7:3", "7:2")


def test_inserts_and_deletes_have_no_old_key(build: Builder) -> None:
    for kind in ("INSERT", "DELETE"):
        [change] = decode(build("shop", "users", kind, [ALICE], mysql_types=TYPES))
        assert change.old_pk is None
