"""Mappers: the action builders, what a mapper may return, `@maps` registration, and `apply`.

The fast path that runs mappers inside the service is in test_mapped_rows.py; this file is
the pure logic: values in, values (or a RouteError at import time) out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from esupdater import actions, maps
from esupdater.actions import Action
from esupdater.change import Change
from esupdater.context import Context
from esupdater.mapping import MapperResultError, actions_of, as_handler
from esupdater.routing import Registry, RouteError, make_mapper_route
from esupdater.testing import MemorySink, apply, make_change


class RecordingSink:
    """A BulkSink that keeps each action as `Context` sent it."""

    def __init__(self) -> None:
        self.actions: list[Action] = []

    async def execute(self, action: Action) -> dict[str, Any]:
        self.actions.append(action)
        return {"status": 200, "result": "created"}


async def sent_by(call: Callable[[Context], Awaitable[Any]]) -> Action:
    """The one action a Context method sends."""
    sink = RecordingSink()
    await call(Context(sink, None, make_change("shop", "users", "INSERT", {"id": 1})))
    (action,) = sink.actions
    return action


def user_document(change: Change) -> Action | None:
    """A mapper for the tests: index the row, delete on DELETE."""
    if change.is_delete:
        return actions.delete(index="users", id=change.pk)
    return actions.index(index="users", id=change.pk, doc=change.row)


# -- the builders are what Context's methods send ------------------------------------------------


async def test_index_without_version_is_what_ctx_index_sends() -> None:
    built = actions.index(index="users", id="1", doc={"a": 1})
    assert built == {"_op_type": "index", "_index": "users", "_id": "1", "_source": {"a": 1}}
    assert await sent_by(lambda ctx: ctx.index(index="users", id="1", doc={"a": 1})) == built


async def test_index_with_version_is_external_versioned_as_ctx_index_sends() -> None:
    built = actions.index(index="users", id="1", doc={"a": 1}, version=42)
    assert built == {"_op_type": "index", "_index": "users", "_id": "1", "_source": {"a": 1},
                     "version": 42, "version_type": "external"}
    sent = await sent_by(lambda ctx: ctx.index(index="users", id="1", doc={"a": 1}, version=42))
    assert sent == built


async def test_index_keeps_a_version_type_given_with_the_version() -> None:
    built = actions.index(index="u", id="1", doc={}, version=3, version_type="external_gte")
    assert (built["version"], built["version_type"]) == (3, "external_gte")


async def test_upsert_is_what_ctx_upsert_sends() -> None:
    built = actions.upsert(index="users", id="1", doc={"a": 1})
    assert built == {"_op_type": "update", "_index": "users", "_id": "1", "doc": {"a": 1},
                     "doc_as_upsert": True}
    assert await sent_by(lambda ctx: ctx.upsert(index="users", id="1", doc={"a": 1})) == built


async def test_update_is_what_ctx_update_sends() -> None:
    built = actions.update(index="users", id="1", doc={"a": 1})
    assert built == {"_op_type": "update", "_index": "users", "_id": "1", "doc": {"a": 1}}
    assert "doc_as_upsert" not in built
    assert await sent_by(lambda ctx: ctx.update(index="users", id="1", doc={"a": 1})) == built


async def test_delete_with_and_without_version_is_what_ctx_delete_sends() -> None:
    plain = actions.delete(index="users", id="1")
    assert plain == {"_op_type": "delete", "_index": "users", "_id": "1"}
    assert await sent_by(lambda ctx: ctx.delete(index="users", id="1")) == plain
    versioned = actions.delete(index="users", id="1", version=9)
    assert versioned == {**plain, "version": 9, "version_type": "external"}
    assert await sent_by(lambda ctx: ctx.delete(index="users", id="1", version=9)) == versioned


async def test_extra_metadata_goes_into_the_action_as_given() -> None:
    built = actions.index(index="users", id="1", doc={}, routing="r1", pipeline="p")
    assert (built["routing"], built["pipeline"]) == ("r1", "p")
    sent = await sent_by(lambda ctx: ctx.index(index="users", id="1", doc={}, routing="r1",
                                               pipeline="p"))
    assert sent == built


async def test_ctx_write_sends_a_built_action_as_it_is() -> None:
    built = actions.upsert(index="users", id="1", doc={"a": 1})
    assert await sent_by(lambda ctx: ctx.write(built)) == built


@pytest.mark.parametrize("builder", [actions.upsert, actions.update])
@pytest.mark.parametrize("meta", [{"version": 3}, {"version_type": "external"}])
def test_upsert_and_update_refuse_external_versions(
    builder: Callable[..., Action], meta: dict[str, Any]
) -> None:
    with pytest.raises(TypeError, match="refuses external versions"):
        builder(index="users", id="1", doc={"a": 1}, **meta)


@pytest.mark.parametrize("method", ["upsert", "update"])
def test_ctx_upsert_and_update_refuse_a_version_when_called(method: str) -> None:
    sink = RecordingSink()
    ctx = Context(sink, None, make_change("shop", "users", "INSERT", {"id": 1}))
    with pytest.raises(TypeError, match="refuses external versions"):
        getattr(ctx, method)(index="users", id="1", doc={}, version=3)
    assert sink.actions == []
    assert ctx.unawaited_error("h") is None  # nothing was started


# -- what a mapper may return --------------------------------------------------------------------


def test_actions_of_accepts_one_dict_a_list_a_tuple_or_none() -> None:
    one = actions.index(index="i", id="1", doc={})
    two = actions.delete(index="i", id="2")
    assert actions_of(one, user_document) == [one]
    assert actions_of([one, two], user_document) == [one, two]
    assert actions_of((one, two), user_document) == [one, two]
    assert actions_of([], user_document) == []
    assert actions_of(None, user_document) == []
    assert type(actions_of((one,), user_document)) is list


@pytest.mark.parametrize(
    ("result", "what"),
    [
        ("users/1", "str"),
        ([{"_op_type": "index"}, "not an action"], "list"),
        ((x for x in [{}]), "generator"),
        (42, "int"),
    ],
)
def test_actions_of_refuses_anything_else_naming_the_mapper(result: Any, what: str) -> None:
    with pytest.raises(MapperResultError) as raised:
        actions_of(result, user_document)
    message = str(raised.value)
    assert f"{__name__}:user_document" in message
    assert f"returned {what}" in message
    assert isinstance(raised.value, TypeError)


async def test_as_handler_writes_a_mappers_actions_through_ctx() -> None:
    handler = as_handler(lambda change: [actions.index(index="i", id="1", doc={"a": 1}),
                                         actions.delete(index="i", id="2")])
    sink = RecordingSink()
    change = make_change("shop", "users", "INSERT", {"id": 1})
    await handler(change, Context(sink, None, change))
    assert [a["_op_type"] for a in sink.actions] == ["index", "delete"]


async def test_as_handler_raises_the_mappers_bad_result() -> None:
    handler = as_handler(lambda change: "oops")
    change = make_change("shop", "users", "INSERT", {"id": 1})
    with pytest.raises(MapperResultError, match="returned str"):
        await handler(change, Context(RecordingSink(), None, change))


# -- registration --------------------------------------------------------------------------------


def test_maps_returns_the_function_unchanged_and_registers_it() -> None:
    with Registry.scoped() as registry:

        def mapper(change: Change) -> Action:
            return actions.index(index="i", id=change.pk, doc=change.row)

        decorated = maps("shop.users")(mapper)
    assert decorated is mapper
    (route,) = registry.handlers_for("shop", "users", "INSERT")
    assert route.mapper is mapper
    assert route.handler is not mapper  # the handler path runs it as_handler


def test_registry_maps_returns_the_function_unchanged() -> None:
    registry = Registry()
    assert registry.maps("shop.users")(user_document) is user_document
    assert [r.mapper for r in registry.routes] == [user_document]


def test_a_mapper_routes_name_is_the_mappers_module_and_qualname() -> None:
    registry = Registry()
    route = registry.add_mapper("shop.users", user_document)
    assert route.name == f"{__name__}:user_document"
    assert route.handler.__qualname__ == "user_document"


def test_an_on_handler_route_has_no_mapper() -> None:
    async def handler(change: Change, ctx: Any) -> None:
        pass

    assert Registry().add("shop.users", handler).mapper is None


def test_an_async_def_is_refused_with_a_pointer_to_on() -> None:
    async def handler(change: Change) -> None:
        pass

    with pytest.raises(RouteError, match="with @on") as raised:
        Registry().maps("shop.users")(handler)
    assert "@maps('shop.users')" in str(raised.value)
    assert "handler" in str(raised.value)


def test_a_mapper_taking_two_arguments_is_refused() -> None:
    def two(change: Change, ctx: Any) -> None:
        pass

    registry = Registry()
    with pytest.raises(RouteError, match=r"one argument, \(change\).*\(change, ctx\)"):
        registry.maps("shop.users")(two)
    assert registry.routes == []


def test_a_mapper_taking_no_argument_is_refused() -> None:
    def none() -> None:
        pass

    with pytest.raises(RouteError, match="one argument"):
        make_mapper_route("shop.users", none)  # type: ignore[arg-type]


def test_a_mapper_with_optional_extra_arguments_is_accepted() -> None:
    def flexible(change: Change, extra: int = 0) -> None:
        pass

    assert make_mapper_route("shop.users", flexible).mapper is flexible


def test_something_not_callable_is_refused() -> None:
    with pytest.raises(RouteError, match="plain `def`"):
        make_mapper_route("shop.users", "not a function")  # type: ignore[arg-type]


@pytest.mark.parametrize("pattern", ["users", "shop.users.x", ".users", "shop.", ""])
def test_a_bad_pattern_is_refused(pattern: str) -> None:
    registry = Registry()
    with pytest.raises(RouteError, match=r"'database\.table'"):
        registry.maps(pattern)(user_document)
    assert registry.routes == []


def test_unknown_types_are_refused() -> None:
    with pytest.raises(RouteError, match="unknown change type 'UPSERT'"):
        Registry().maps("shop.users", types={"INSERT", "UPSERT"})(user_document)
    with pytest.raises(RouteError, match="set of names"):
        Registry().maps("shop.users", types="INSERT")(user_document)  # type: ignore[arg-type]


def test_types_limit_what_a_mapper_gets() -> None:
    registry = Registry()
    registry.maps("shop.users", types={"delete"})(user_document)
    assert registry.handlers_for("shop", "users", "INSERT") == ()
    assert len(registry.handlers_for("shop", "users", "DELETE")) == 1


# -- apply: the test harness runs mappers into MemorySink ----------------------------------------


async def test_apply_indexes_and_deletes_through_a_mapper() -> None:
    registry = Registry()
    registry.maps("shop.users")(user_document)
    sink = await apply(make_change("shop", "users", "INSERT", {"id": 7, "name": "Ada"}),
                       registry=registry)
    assert sink.get("users", "7") == {"id": 7, "name": "Ada"}
    await apply(make_change("shop", "users", "DELETE", {"id": 7, "name": "Ada"}),
                registry=registry, sink=sink)
    assert sink.get("users", "7") is None
    assert [a["_op_type"] for a in sink.actions] == ["index", "delete"]


async def test_apply_writes_a_list_of_two_actions_in_order() -> None:
    registry = Registry()

    @registry.maps("shop.users")
    def both(change: Change) -> list[Action]:
        return [
            actions.index(index="users", id=change.pk, doc=change.row),
            actions.upsert(index="names", id=str(change.row["name"]), doc={"id": change.pk}),
        ]

    sink = await apply(make_change("shop", "users", "INSERT", {"id": 3, "name": "Bo"}),
                       registry=registry)
    assert sink.get("users", "3") == {"id": 3, "name": "Bo"}
    assert sink.get("names", "Bo") == {"id": "3"}
    assert [(a["_index"], a["_op_type"]) for a in sink.actions] == [
        ("users", "index"), ("names", "update")]


async def test_apply_of_a_mapper_returning_none_writes_nothing() -> None:
    registry = Registry()
    registry.maps("shop.users")(lambda change: None)
    sink = await apply(make_change("shop", "users", "INSERT", {"id": 1}), registry=registry)
    assert sink.actions == []
    assert sink.documents == {}


async def test_apply_raises_a_mappers_bad_result() -> None:
    registry = Registry()
    registry.maps("shop.users")(lambda change: "users/1")
    with pytest.raises(MapperResultError, match="returned str"):
        await apply(make_change("shop", "users", "INSERT", {"id": 1}), registry=registry)


async def test_a_mapper_and_an_on_handler_of_one_table_both_run_in_registration_order() -> None:
    registry = Registry()
    ran: list[str] = []

    @registry.on("shop.users")
    async def before(change: Change, ctx: Context) -> None:
        ran.append("before")
        await ctx.index(index="audit", id=change.pk, doc={"seen": len(ran)})

    @registry.maps("shop.users")
    def mapper(change: Change) -> Action:
        ran.append("mapper")
        return actions.index(index="users", id=change.pk, doc=change.row)

    @registry.on("shop.*")
    async def after(change: Change, ctx: Context) -> None:
        ran.append("after")

    sink = MemorySink()
    await apply(make_change("shop", "users", "INSERT", {"id": 5}), registry=registry, sink=sink)
    assert ran == ["before", "mapper", "after"]
    assert [a["_index"] for a in sink.actions] == ["audit", "users"]
    assert [r.name.rsplit(".", 1)[-1] for r in registry.handlers_for("shop", "users", "INSERT")
            ] == ["before", "mapper", "after"]
