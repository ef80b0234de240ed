"""verify's comparison and report, without servers."""

from __future__ import annotations

from decimal import Decimal

from esupdater.verify import Difference, VerifyReport, first_difference


def test_a_fraction_held_as_decimal_or_float_is_the_same_value() -> None:
    assert first_difference({"price": Decimal("12.5"), "n": 1}, {"price": 12.5, "n": 1}) == ""


def test_the_first_differing_field_is_named_with_both_values() -> None:
    detail = first_difference({"a": 1, "city": "Lyon"}, {"a": 1, "city": "Paris"})
    assert detail == "city: table 'Lyon' index 'Paris'"
    assert first_difference({"a": 1}, {"a": 1, "extra": True}) == "extra: table None index True"


def test_the_report_prints_the_first_differences_then_the_counts() -> None:
    report = VerifyReport("shop.users", rows=3, expected=3, equal=1, differences=[
        Difference("missing", "users", "2"),
        Difference("differs", "users", "3", "city: table 'Lyon' index 'Paris'"),
        Difference("orphan", "users", "9"),
    ])
    assert report.lines(show=2) == [
        "missing users/2",
        "differs users/3: city: table 'Lyon' index 'Paris'",
        "verify shop.users: 3 rows, 3 documents expected, 1 equal, 1 missing, 1 different, "
        "1 orphans",
    ]
    assert not report.ok
    report.repaired, report.written, report.deleted = True, 2, 1
    assert report.ok
    assert report.lines(show=0)[-1] == "repaired: 2 written, 1 deleted"
