"""The example shop's handlers (handlers/shop.py), tested with esupdater.testing: no servers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

import handlers.shop
from esupdater.canal import flat_message
from esupdater.testing import apply, changes_from_canal, make_change
from handlers.shop import ORDERS_INDEX, USERS_INDEX


def user(id: int, **changes: Any) -> dict[str, Any]:
    """A shop.users row as the decoder types it."""
    return {
        "id": id, "name": "Ada", "email": "ada@example.com", "city": "Paris",
        "balance": Decimal("12.50"), "password_hash": "x",
        "created_at": "2026-11-01T10:00:00", "updated_at": "2026-11-01T10:00:00", **changes,
    }  # fmt: skip


def order(id: int, **changes: Any) -> dict[str, Any]:
    """A shop.orders_N row as the decoder types it."""
    return {"id": id, "user_id": 7, "amount": Decimal("19.90"), "status": "created", **changes}


async def test_a_new_user_gets_a_document_with_the_searchable_columns_only() -> None:
    sink = await apply(make_change("shop", "users", "INSERT", user(7)))
    assert sink.documents[USERS_INDEX]["7"] == {
        "name": "Ada", "email": "ada@example.com", "city": "Paris", "balance": 12.5,
        "created_at": "2026-11-01T10:00:00", "updated_at": "2026-11-01T10:00:00",
    }  # fmt: skip


async def test_an_updated_user_document_follows_the_row() -> None:
    sink = await apply([
        make_change("shop", "users", "INSERT", user(7)),
        make_change("shop", "users", "UPDATE", user(7, city="Lyon"), old={"city": "Paris"}),
    ])  # fmt: skip
    assert sink.documents[USERS_INDEX]["7"]["city"] == "Lyon"


async def test_an_update_creates_the_document_when_the_insert_was_never_seen() -> None:
    sink = await apply(make_change("shop", "users", "UPDATE", user(8), old={"city": "Rome"}))
    assert sink.documents[USERS_INDEX]["8"]["city"] == "Paris"


async def test_a_deleted_user_loses_its_document() -> None:
    sink = await apply([
        make_change("shop", "users", "INSERT", user(7)),
        make_change("shop", "users", "DELETE", user(7)),
    ])  # fmt: skip
    assert sink.get(USERS_INDEX, "7") is None


async def test_orders_from_every_shard_land_in_one_index_with_their_shard() -> None:
    changes = [make_change("shop", f"orders_{n % 4}", "INSERT", order(n)) for n in range(8)]
    sink = await apply(changes)
    orders = sink.documents[ORDERS_INDEX]
    assert sorted(orders, key=int) == [str(n) for n in range(8)]
    assert orders["6"] == {"id": 6, "user_id": 7, "amount": 19.9, "status": "created",
                           "shard": "orders_2"}  # fmt: skip


async def test_an_order_follows_its_status_updates_and_its_delete() -> None:
    sink = await apply([
        make_change("shop", "orders_1", "INSERT", order(5)),
        make_change("shop", "orders_1", "UPDATE", order(5, status="paid"),
                    old={"status": "created"}),
    ])  # fmt: skip
    assert sink.documents[ORDERS_INDEX]["5"]["status"] == "paid"
    await apply(make_change("shop", "orders_1", "DELETE", order(5, status="paid")), sink=sink)
    assert sink.get(ORDERS_INDEX, "5") is None


async def test_an_order_whose_id_changes_moves_to_its_new_document() -> None:
    sink = await apply([
        make_change("shop", "orders_2", "INSERT", order(5)),
        make_change("shop", "orders_2", "UPDATE", order(500), old={"id": 5}),
    ])
    assert sink.get(ORDERS_INDEX, "5") is None
    assert sink.documents[ORDERS_INDEX]["500"]["id"] == 500


async def test_a_replayed_id_change_spares_the_order_inserted_again_under_the_old_id() -> None:
    """Insert 5, change its id to 500, insert 5 again; a crash before the commit replays all
    three (one partition, so their versions compare): 5 and 500 must both stay."""
    scenario = [
        make_change("shop", "orders_2", "INSERT", order(5), offset=10),
        make_change("shop", "orders_2", "UPDATE", order(500), old={"id": 5}, offset=11),
        make_change("shop", "orders_2", "INSERT", order(5, status="again"), offset=12),
    ]
    sink = await apply(scenario)
    await apply(scenario, sink=sink)  # the replay
    assert sorted(sink.documents[ORDERS_INDEX], key=int) == ["5", "500"]
    assert sink.documents[ORDERS_INDEX]["5"]["status"] == "again"


async def test_the_old_order_is_deleted_unversioned_when_canal_hashes_orders_by_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Then the old id's versions come from another partition and do not compare."""
    monkeypatch.setattr(handlers.shop, "ORDERS_IN_ONE_PARTITION", False)
    sink = await apply([
        make_change("shop", "orders_2", "INSERT", order(5)),
        make_change("shop", "orders_2", "UPDATE", order(500), old={"id": 5}),
    ])
    deletes = [action for action in sink.actions if action["_op_type"] == "delete"]
    assert deletes == [{"_op_type": "delete", "_index": ORDERS_INDEX, "_id": "5"}]
    assert sink.get(ORDERS_INDEX, "5") is None


async def test_ddl_on_a_shard_writes_nothing() -> None:
    ddl = make_change("shop", "orders_2", "ALTER", sql="ALTER TABLE orders_2 ADD note text")
    sink = await apply(ddl)
    assert sink.actions == []


async def test_canal_bytes_go_through_the_same_typing_as_in_production() -> None:
    value = flat_message(
        "shop", "orders_3", "INSERT",
        [{"id": "11", "user_id": "7", "amount": "5.00", "status": "paid",
          "created_at": "2026-11-02 08:30:00"}],
        mysql_types={"id": "bigint(20)", "user_id": "bigint(20)", "amount": "decimal(10,2)",
                     "status": "varchar(16)", "created_at": "datetime"},
    )  # fmt: skip
    sink = await apply(changes_from_canal(value))
    assert sink.documents[ORDERS_INDEX]["11"] == {
        "id": 11, "user_id": 7, "amount": 5.0, "status": "paid",
        "created_at": "2026-11-02T08:30:00", "shard": "orders_3",
    }  # fmt: skip
