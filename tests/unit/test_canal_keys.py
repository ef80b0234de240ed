"""`Change.pk`: one string per primary key, the same for the same key, different for different ones.

It is the Elasticsearch document id in most handlers, so two rows must never share it, and
the ids of existing documents must not move under an upgrade.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from esupdater.canal import CanalDecoder, flat_message
from esupdater.change import PK_ESCAPE, PK_SEPARATOR, Position, join_pk, split_pk

DECODER = CanalDecoder()
TWO = ("order_id", "line")


def pk(*values: str) -> str:
    return join_pk(tuple(f"c{i}" for i in range(len(values))),
                   {f"c{i}": value for i, value in enumerate(values)})


def test_composite_keys_whose_values_hold_the_separator_do_not_collide() -> None:
    assert pk("1:2", "3") != pk("1", "2:3")


def test_a_separator_inside_a_composite_key_value_is_escaped() -> None:
    assert pk("1:2", "3") == "1\\:2:3"
    assert pk("a\\", "b") == "a\\\\:b"  # the escape character itself is escaped too


def test_composite_keys_without_separator_or_escape_are_joined_as_before() -> None:
    assert pk("7", "3") == "7:3"
    assert pk("2024-03-01", "abc", "") == "2024-03-01:abc:"


def test_single_column_keys_are_canals_string_untouched() -> None:
    assert pk("1:2") == "1:2"
    assert pk("a\\b") == "a\\b"
    assert join_pk(("id",), {"id": None}) == ""


def test_the_separator_and_escape_are_what_the_readme_says() -> None:
    assert (PK_SEPARATOR, PK_ESCAPE) == (":", "\\")


key_values = st.lists(st.text(alphabet=st.sampled_from("ab:\\\x00é"), max_size=6),
                      min_size=2, max_size=4)


@given(key_values)
def test_split_pk_gives_back_the_values_of_a_composite_key(values: list[str]) -> None:
    assert split_pk(pk(*values), len(values)) == tuple(values)


@given(key_values, key_values)
def test_different_composite_keys_never_share_a_pk(first: list[str], second: list[str]) -> None:
    if len(first) == len(second) and first != second:
        assert pk(*first) != pk(*second)


def test_split_pk_of_a_single_column_key_is_the_key() -> None:
    assert split_pk("1:2\\", 1) == ("1:2\\",)


def test_a_decoded_composite_key_and_its_previous_key_are_escaped() -> None:
    types = {"order_id": "varchar(16)", "line": "varchar(16)", "qty": "int(11)"}
    record = flat_message(
        "shop", "lines", "UPDATE", [{"order_id": "A:1", "line": "2", "qty": "5"}],
        old=[{"line": "1:x"}], pk_names=TWO, mysql_types=types,
    )

    [change] = DECODER.decode(record, Position("canal", 0, 1))

    assert (change.pk, change.old_pk) == ("A\\:1:2", "A\\:1:1\\:x")
    assert split_pk(change.pk, 2) == ("A:1", "2")
