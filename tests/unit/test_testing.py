"""The test harness: MemorySink applies bulk actions as Elasticsearch does; apply() routes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from esupdater import BulkItemError, Change, Context, Registry
from esupdater.canal import flat_message
from esupdater.testing import MemorySink, apply, changes_from_canal, make_change
from tests.versioning_scenario import run_versioning_scenario


async def test_index_creates_then_replaces_the_whole_document() -> None:
    sink = MemorySink()
    first = await sink.execute({"_op_type": "index", "_index": "i", "_id": "1",
                                "_source": {"a": 1, "b": 2}})  # fmt: skip
    second = await sink.execute({"_op_type": "index", "_index": "i", "_id": "1",
                                 "_source": {"a": 3}})  # fmt: skip
    assert sink.documents == {"i": {"1": {"a": 3}}}
    assert (first["result"], first["status"], first["_version"]) == ("created", 201, 1)
    assert (second["result"], second["status"], second["_version"]) == ("updated", 200, 2)
    assert (second["_index"], second["_id"]) == ("i", "1")


async def test_index_without_source_key_takes_the_non_metadata_fields() -> None:
    sink = MemorySink()
    await sink.execute({"_index": "i", "_id": 5, "name": "x"})  # _op_type defaults to index
    assert sink.documents["i"]["5"] == {"name": "x"}


async def test_documents_hold_what_elasticsearch_would_store() -> None:
    sink = MemorySink()
    source = {"price": Decimal("12.50"), "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}
    await sink.execute({"_op_type": "index", "_index": "i", "_id": "1", "_source": source})
    assert sink.documents["i"]["1"] == {"price": 12.5, "at": "2026-01-02T03:04:05+00:00"}


async def test_a_stored_document_does_not_change_when_the_handler_mutates_its_dict() -> None:
    sink = MemorySink()
    doc = {"tags": ["a"]}
    await sink.execute({"_op_type": "index", "_index": "i", "_id": "1", "_source": doc})
    doc["tags"].append("b")
    assert sink.documents["i"]["1"] == {"tags": ["a"]}
    assert sink.actions[0]["_source"] == {"tags": ["a"]}


async def test_update_merges_objects_recursively_and_replaces_other_values() -> None:
    sink = MemorySink()
    await sink.execute({"_index": "i", "_id": "1",
                        "_source": {"a": 1, "tags": ["x"], "obj": {"k": 1, "m": 2}}})  # fmt: skip
    item = await sink.execute({"_op_type": "update", "_index": "i", "_id": "1",
                               "doc": {"tags": ["y"], "obj": {"m": 3}}})  # fmt: skip
    assert sink.documents["i"]["1"] == {"a": 1, "tags": ["y"], "obj": {"k": 1, "m": 3}}
    assert item["result"] == "updated"


async def test_update_that_changes_nothing_is_a_noop() -> None:
    sink = MemorySink()
    await sink.execute({"_index": "i", "_id": "1", "_source": {"a": 1}})
    item = await sink.execute({"_op_type": "update", "_index": "i", "_id": "1", "doc": {"a": 1}})
    assert (item["result"], item["status"], item["_version"]) == ("noop", 200, 1)


async def test_update_of_a_missing_document_raises_document_missing_404() -> None:
    sink = MemorySink()
    with pytest.raises(BulkItemError) as raised:
        await sink.execute({"_op_type": "update", "_index": "i", "_id": "9", "doc": {"a": 1}})
    assert (raised.value.status, raised.value.index, raised.value.doc_id) == (404, "i", "9")
    assert "document_missing_exception" in raised.value.reason
    assert sink.documents == {}


async def test_doc_as_upsert_creates_a_missing_document() -> None:
    sink = MemorySink()
    item = await sink.execute({"_op_type": "update", "_index": "i", "_id": "1",
                               "doc": {"a": 1}, "doc_as_upsert": True})  # fmt: skip
    assert sink.documents["i"]["1"] == {"a": 1}
    assert (item["result"], item["status"]) == ("created", 201)


async def test_upsert_body_is_used_only_when_the_document_is_missing() -> None:
    sink = MemorySink()
    action = {"_op_type": "update", "_index": "i", "_id": "1",
              "doc": {"n": 2}, "upsert": {"n": 1, "new": True}}  # fmt: skip
    await sink.execute(action)
    assert sink.documents["i"]["1"] == {"n": 1, "new": True}
    await sink.execute(action)
    assert sink.documents["i"]["1"] == {"n": 2, "new": True}


async def test_delete_removes_and_deleting_a_missing_document_is_fine() -> None:
    sink = MemorySink()
    await sink.execute({"_index": "i", "_id": "1", "_source": {"a": 1}})
    deleted = await sink.execute({"_op_type": "delete", "_index": "i", "_id": "1"})
    missing = await sink.execute({"_op_type": "delete", "_index": "i", "_id": "1"})
    assert sink.get("i", "1") is None
    assert (deleted["result"], deleted["status"]) == ("deleted", 200)
    assert (missing["result"], missing["status"]) == ("not_found", 404)


async def test_create_conflicts_with_an_existing_document_409() -> None:
    sink = MemorySink()
    created = await sink.execute({"_op_type": "create", "_index": "i", "_id": "1",
                                  "_source": {"a": 1}})  # fmt: skip
    with pytest.raises(BulkItemError) as raised:
        await sink.execute({"_op_type": "create", "_index": "i", "_id": "1", "_source": {"a": 2}})
    assert created["result"] == "created"
    assert raised.value.status == 409
    assert sink.documents["i"]["1"] == {"a": 1}


async def test_every_action_is_recorded_in_order_even_refused_ones() -> None:
    sink = MemorySink()
    await sink.execute({"_op_type": "delete", "_index": "i", "_id": "1"})
    with pytest.raises(BulkItemError):
        await sink.execute({"_op_type": "update", "_index": "i", "_id": "1", "doc": {}})
    assert [a["_op_type"] for a in sink.actions] == ["delete", "update"]


async def test_actions_it_cannot_apply_say_why() -> None:
    sink = MemorySink()
    with pytest.raises(ValueError, match="_op_type"):
        await sink.execute({"_op_type": "upsert", "_index": "i", "_id": "1"})
    with pytest.raises(ValueError, match="_index"):
        await sink.execute({"_id": "1", "_source": {}})
    with pytest.raises(NotImplementedError, match="scripts"):
        await sink.execute({"_op_type": "update", "_index": "i", "_id": "1", "script": "x"})


async def test_context_writes_through_the_memory_sink() -> None:
    sink = MemorySink()
    ctx = Context(sink, None, make_change("shop", "users", row={"id": 1}))
    await ctx.upsert(index="u", id="1", doc={"a": 1})
    await ctx.update(index="u", id="1", doc={"b": 2})
    await ctx.bulk([{"_op_type": "index", "_index": "u", "_id": "2", "_source": {"c": 3}}])
    await ctx.delete(index="u", id="3")
    assert sink.documents == {"u": {"1": {"a": 1, "b": 2}, "2": {"c": 3}}}


def test_make_change_builds_what_the_decoder_would() -> None:
    change = make_change(
        "shop", "users", "update", {"id": 7, "name": "Ada", "vip": True, "tags": ["a"]},
        old={"name": "Ad"}, offset=12,
    )  # fmt: skip
    assert (change.type, change.pk, change.pk_names) == ("UPDATE", "7", ("id",))
    assert change.row["id"] == 7
    assert change.raw == {"id": "7", "name": "Ada", "vip": "1", "tags": '["a"]'}
    assert change.old == {"name": "Ad"}
    assert change.changed == frozenset({"name"})
    assert (change.topic, change.partition, change.offset) == ("test", 0, 12)
    assert change.is_update
    assert not change.is_ddl
    assert change.executed_at is not None


def test_make_change_joins_composite_keys_and_makes_ddl() -> None:
    row = make_change("shop", "lines", row={"order_id": 3, "line": 2},
                      pk_names=("order_id", "line"))  # fmt: skip
    ddl = make_change("shop", "users", "ALTER", sql="ALTER TABLE users ADD x int")
    assert row.pk == "3:2"
    assert (ddl.is_ddl, ddl.sql, ddl.row) == (True, "ALTER TABLE users ADD x int", {})


def test_changes_from_canal_decodes_like_the_service() -> None:
    value = flat_message(
        "shop", "users", "UPDATE", [{"id": "1", "n": "2"}, {"id": "2", "n": "5"}],
        old=[{"n": "1"}, {"n": "4"}], mysql_types={"id": "bigint(20)", "n": "int(11)"},
    )  # fmt: skip
    changes = changes_from_canal(value, topic="t", partition=3, offset=9)
    assert [(c.pk, c.row["n"], c.old) for c in changes] == [("1", 2, {"n": 1}), ("2", 5, {"n": 4})]
    assert str(changes[1].position) == "t/3@9"


async def test_apply_runs_matching_handlers_in_registration_order() -> None:
    registry = Registry()
    seen: list[str] = []

    async def first(change: Change, ctx: Context) -> None:
        seen.append(f"first {change.pk}")
        await ctx.index(index="t", id=change.pk, doc={"by": "first"})

    async def second(change: Change, ctx: Context) -> None:
        seen.append(f"second {change.pk}")

    async def elsewhere(change: Change, ctx: Context) -> None:
        seen.append("elsewhere")

    registry.add("shop.*", first)
    registry.add("shop.users", second)
    registry.add("other.users", elsewhere)
    changes = [make_change("shop", "users", row={"id": i}) for i in (1, 2)]
    sink = await apply(changes, registry=registry)
    assert seen == ["first 1", "second 1", "first 2", "second 2"]
    assert sink.documents["t"] == {"1": {"by": "first"}, "2": {"by": "first"}}


async def test_apply_takes_one_change_and_reuses_a_given_sink() -> None:
    registry = Registry()

    async def count(change: Change, ctx: Context) -> None:
        await ctx.upsert(index="t", id="n", doc={change.pk: True})

    registry.add("shop.users", count)
    sink = await apply(make_change("shop", "users", row={"id": 1}), registry=registry)
    again = await apply(make_change("shop", "users", row={"id": 2}), registry=registry, sink=sink)
    assert again is sink
    assert sink.documents["t"]["n"] == {"1": True, "2": True}


async def test_apply_lets_a_handler_error_propagate() -> None:
    registry = Registry()

    async def strict(change: Change, ctx: Context) -> None:
        await ctx.update(index="t", id=change.pk, doc={"a": 1})

    registry.add("shop.users", strict)
    with pytest.raises(BulkItemError, match="document_missing_exception"):
        await apply(make_change("shop", "users", "UPDATE", {"id": 1}), registry=registry)


async def test_ddl_reaches_only_handlers_that_ask_for_it() -> None:
    registry = Registry()
    seen: list[str] = []

    async def rows(change: Change, ctx: Context) -> None:
        seen.append("rows")

    async def schema(change: Change, ctx: Context) -> None:
        seen.append(change.sql)

    registry.add("shop.*", rows)
    registry.add("shop.*", schema, types={"DDL"})
    await apply(make_change("shop", "users", "ALTER", sql="ALTER TABLE users"), registry=registry)
    assert seen == ["ALTER TABLE users"]


async def test_versioned_writes_are_fenced_like_elasticsearch_fences_them() -> None:
    sink = MemorySink()

    async def get(doc_id: str) -> dict[str, Any] | None:
        return sink.get("users", doc_id)

    await run_versioning_scenario(sink, "users", get)


async def test_partial_updates_cannot_be_versioned() -> None:
    ctx = Context(MemorySink(), None, make_change("shop", "users", row={"id": 1}))
    with pytest.raises(TypeError, match=r"ctx.index\(\.\.\., version=change.version\)"):
        await ctx.upsert(index="u", id="1", doc={"a": 1}, version=ctx.change.version)
    with pytest.raises(TypeError, match="update API refuses external versions"):
        await ctx.update(index="u", id="1", doc={"a": 1}, version_type="external", version=1)


def test_change_version_grows_with_offset_then_row_index() -> None:
    versions = [
        make_change("shop", "users", offset=offset, row_index=row).version
        for offset, row in [(0, 0), (0, 1), (0, 999_999), (1, 0), (2, 5), (10**12, 0)]
    ]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    assert versions[-1] < 2**63  # Elasticsearch's version is a signed long


def test_change_version_refuses_a_row_index_it_cannot_order() -> None:
    change = make_change("shop", "users", offset=7, row_index=1 << 20)
    with pytest.raises(ValueError, match=r"test/0@7: row 1048576"):
        _ = change.version


async def test_changes_made_one_after_another_are_newer_for_versioned_writes() -> None:
    registry = Registry()

    @registry.on("shop.users")
    async def versioned(change: Change, ctx: Context) -> None:
        await ctx.index(index="u", id=change.pk, doc=change.row, version=change.version)

    value = flat_message("shop", "users", "UPDATE", [{"id": "1", "v": "3"}],
                         mysql_types={"id": "int", "v": "int"})
    sink = await apply(
        [make_change("shop", "users", "INSERT", {"id": 1, "v": 1}),
         make_change("shop", "users", "UPDATE", {"id": 1, "v": 2}),
         *changes_from_canal(value)],
        registry=registry,
    )
    assert sink.get("u", "1") == {"id": 1, "v": 3}
    stale = await apply(make_change("shop", "users", "UPDATE", {"id": 1, "v": 0}, offset=0),
                        registry=registry, sink=sink)
    assert stale.get("u", "1") == {"id": 1, "v": 3}  # an old offset: refused, as ES would


def test_make_change_names_the_old_key_when_an_update_changed_it() -> None:
    moved = make_change("shop", "users", "UPDATE", {"id": 9, "name": "x"}, old={"id": 4})
    kept = make_change("shop", "users", "UPDATE", {"id": 9, "name": "x"}, old={"name": "y"})
    assert (moved.pk, moved.old_pk, kept.old_pk) == ("9", "4", None)
