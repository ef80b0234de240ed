"""TableReader's SQL and naming rules, without a server (tests/integration has the reads)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from esupdater.change import Change, Position
from esupdater.table_reader import (
    Column,
    TableReadError,
    TableShape,
    column_readings,
    float32_text,
    keyset_params,
    keyset_predicate,
    match_tables,
    quote_name,
    select_sql,
    shape_of,
)

ORDERS = TableShape("shop", "orders", (Column("id", "bigint(20)"), Column("note", "text")),
                    ("id",))


def test_a_one_column_keyset_is_a_plain_greater_than() -> None:
    assert keyset_predicate(["id"]) == "`id` > %s"
    assert keyset_params([7]) == [7]


def test_a_two_column_keyset_is_a_union_of_exact_ranges() -> None:
    assert keyset_predicate(["a", "b"]) == "(`a` > %s) OR (`a` = %s AND `b` > %s)"
    assert keyset_params([1, "x"]) == [1, 1, "x"]


def test_a_three_column_keyset_takes_each_prefix_as_equal_and_the_next_column_greater() -> None:
    assert keyset_predicate(["a", "b", "c"]) == (
        "(`a` > %s) OR (`a` = %s AND `b` > %s) OR (`a` = %s AND `b` = %s AND `c` > %s)")
    assert keyset_params([1, "x", b"\x00"]) == [1, 1, "x", 1, "x", b"\x00"]
    assert keyset_predicate(["a", "b", "c"]).count("%s") == len(keyset_params([1, 2, 3]))


def test_a_keyset_needs_a_key_column() -> None:
    with pytest.raises(ValueError, match="at least one key column"):
        keyset_predicate([])


def test_names_are_quoted_and_percent_signs_are_no_parameters() -> None:
    assert quote_name("we`ird%") == "`we``ird%%`"


def test_the_first_chunk_has_no_keyset_and_later_ones_page_by_key_never_by_offset() -> None:
    first = select_sql(ORDERS, after=False)
    assert first == "SELECT `id`, `note` FROM `shop`.`orders` ORDER BY `id` LIMIT %s"
    later = select_sql(ORDERS, after=True)
    assert later == ("SELECT `id`, `note` FROM `shop`.`orders` WHERE (`id` > %s) "
                     "ORDER BY `id` LIMIT %s")
    assert "OFFSET" not in first + later


def test_the_operators_where_is_one_parenthesised_condition_with_its_percent_signs_kept() -> None:
    sql = select_sql(ORDERS, after=True, where="note LIKE 'a%' OR id < 3")
    assert "WHERE (note LIKE 'a%%' OR id < 3) AND (`id` > %s) ORDER BY" in sql


def test_a_float_column_is_read_as_the_double_it_is() -> None:
    shape = TableShape("shop", "m", (Column("id", "int(11)"), Column("f", "float")), ("id",))
    assert select_sql(shape, after=False).startswith("SELECT `id`, CAST(`f` AS DOUBLE) FROM")


@pytest.mark.parametrize(("double", "canal"), [
    ("3.3333332538604736", "3.3333333"), ("0.10000000149011612", "0.1"), ("0.25", "0.25"),
    ("1.0000000150474662e30", "1e+30"), ("-1.1754943508222875e-38", "-1.1754944e-38"),
])
def test_a_float_gets_the_fewest_digits_that_are_the_same_single_precision_float(
    double: str, canal: str
) -> None:
    assert float32_text(double) == canal


NAMES = [("shop", "orders_2024"), ("shop", "orders_2023"), ("shop", "orders"), ("shop", "users"),
         ("other", "orders_x"), ("mysql", "user"), ("shop", "Orders_9")]


def test_a_glob_resolves_to_the_matching_tables_in_name_order() -> None:
    assert match_tables("shop.orders_*", NAMES) == [("shop", "orders_2023"),
                                                    ("shop", "orders_2024")]
    assert match_tables("*.orders_*", NAMES) == [("other", "orders_x"), ("shop", "orders_2023"),
                                                 ("shop", "orders_2024")]
    assert match_tables("shop.users", NAMES) == [("shop", "users")]
    assert match_tables("shop.nothing*", NAMES) == []


def test_a_glob_is_case_sensitive_and_never_matches_the_servers_own_schemas() -> None:
    assert match_tables("shop.O*", NAMES) == [("shop", "Orders_9")]
    assert match_tables("*.user", NAMES) == []


def test_a_pattern_without_a_database_is_refused_with_an_example() -> None:
    with pytest.raises(TableReadError, match=r"'orders_\*': name tables as database\.table"):
        match_tables("orders_*", NAMES)


def test_a_table_without_a_primary_key_is_refused_by_name() -> None:
    with pytest.raises(TableReadError, match=r"table shop\.log has no primary key"):
        shape_of("shop", "log", [("id", "int(11)")], [])


def test_a_table_without_columns_is_not_found() -> None:
    with pytest.raises(TableReadError, match=r"table shop\.gone not found"):
        shape_of("shop", "gone", [], [])


def test_a_shape_keeps_table_order_and_key_order() -> None:
    shape = shape_of("shop", "lines", [("b", "int(11)"), ("a", "varchar(8)"), ("v", "text")],
                     ["a", "b"])
    assert [column.name for column in shape.columns] == ["b", "a", "v"]
    assert (shape.pk_names, shape.name) == (("a", "b"), "shop.lines")


def test_binary_values_become_one_character_per_byte_and_bits_their_number() -> None:
    shape = TableShape("shop", "t", (Column("b", "binary(4)"), Column("bits", "bit(12)"),
                                     Column("d", "decimal(10,2)")), ("b",))
    binary, bits, number = column_readings(shape, tinyint1_as_bool=False)
    assert binary.text(b"\x01\x00\xff\x00") == "\x01\x00\xff\x00"
    assert binary.key_param("\x01\x00\xff\x00") == b"\x01\x00\xff\x00"
    assert bits.text(b"\x0f\xff") == "4095"
    assert bits.key_param("4095") == 4095
    assert number.key_param("12.50") == Decimal("12.50")
    assert number.text(None) is None


def test_a_change_is_from_the_binlog_unless_it_says_it_was_read_from_the_table() -> None:
    fields = dict(database="shop", table="t", type="INSERT", row={}, old=None, pk_names=(),
                  raw={}, executed_at=None, sql="", position=Position("shop.t", -1, 0))
    assert (Change(**fields).source, Change(**fields).is_backfill) == ("binlog", False)
    assert Change(**fields, source="table").is_backfill
