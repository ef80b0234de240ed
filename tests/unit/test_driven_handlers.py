"""Rows of one `async def` handler stepped by their batch (esupdater.driven): no task per
row while the handler awaits only its own ctx writes, and every behaviour of the task path
kept: the item a write returns, several writes, refused and retried writes, retries and
set-aside, cancel, and handlers that need a task of their own.

Built as `esupdater run` builds it, over the fake client (tests/unit/test_mapped_rows.py).
"""

from __future__ import annotations

import asyncio
import functools
from types import SimpleNamespace
from typing import Any

import pytest

from esupdater.canal.build import flat_message
from esupdater.change import Change
from esupdater.cli import handler_paths
from esupdater.context import Context
from esupdater.errors import BulkItemError
from esupdater.routing import Registry
from esupdater.testing import MemorySink, make_change
from tests.unit.fake_elasticsearch import FakeElasticsearch
from tests.unit.test_mapped_rows import (
    MAX_ATTEMPTS,
    TYPES,
    HeldElasticsearch,
    failing,
    record,
    service,
    settle,
    wait_until,
)


def handled(handler: Any) -> Registry:
    registry = Registry()
    registry.add("shop.users", handler)
    return registry


async def test_a_fetchs_handler_rows_go_in_one_request_with_no_task_each() -> None:
    items: list[dict[str, Any]] = []
    tasks: list[asyncio.Task[Any] | None] = []

    async def index_user(change: Change, ctx: Context) -> None:
        tasks.append(asyncio.current_task())
        items.append(await ctx.index(index="users", id=change.pk, doc=change.row))

    async with service(handled(index_user)) as svc:
        await svc.feed(record(0, [(1, 10), (2, 20)]), record(1, [(3, 30)]))
        await svc.settled()
        assert svc.es.docs == {("users", "1"): {"id": 1, "v": 10},
                               ("users", "2"): {"id": 2, "v": 20},
                               ("users", "3"): {"id": 3, "v": 30}}
        assert len(svc.es.calls) == 1  # one request for the fetch
        assert [item["_id"] for item in items] == ["1", "2", "3"]  # each got its item
        assert {item["result"] for item in items} == {"created"}
        assert tasks == [None, None, None]  # stepped by the batch: no task is current
        assert svc.handler_rows == []  # not the task path
        assert svc.committable() == 2
        assert svc.stats.rows_done == 3
        assert svc.dispatcher.in_flight == 0
        assert svc.writer._order == {}


async def test_a_handlers_writes_one_after_another_each_awaited() -> None:
    seen: list[str] = []

    async def two_writes(change: Change, ctx: Context) -> None:
        first = await ctx.index(index="users", id=change.pk, doc=change.row)
        seen.append(f"{change.pk}:{first['result']}")
        await ctx.upsert(index="by_v", id=str(change.row["v"]), doc={"id": change.pk})
        seen.append(f"{change.pk}:done")

    async with service(handled(two_writes)) as svc:
        await svc.feed(record(0, [(1, 7), (2, 8)]))
        await svc.settled()
        assert svc.es.docs == {("users", "1"): {"id": 1, "v": 7}, ("users", "2"): {"id": 2, "v": 8},
                               ("by_v", "7"): {"id": "1"}, ("by_v", "8"): {"id": "2"}}
        assert len(svc.es.calls) == 2  # the second writes once the first were acknowledged
        assert seen == ["1:created", "2:created", "1:done", "2:done"]
        assert svc.handler_rows == []
        assert svc.committable() == 1


async def test_a_key_repeated_in_a_fetch_is_handled_in_order() -> None:
    async def index_user(change: Change, ctx: Context) -> None:
        await ctx.index(index="users", id=change.pk, doc=change.row)

    async with service(handled(index_user)) as svc:
        await svc.feed(record(0, [(1, 1), (2, 1), (1, 2)]), record(1, [(1, 3)]))
        await svc.settled()
        assert [body["v"] for body in svc.written("1")] == [1, 2, 3]
        assert svc.es.docs[("users", "1")] == {"id": 1, "v": 3}
        assert svc.committable() == 2


async def test_a_handler_awaiting_anything_else_runs_in_a_task_of_its_own() -> None:
    tasks: list[asyncio.Task[Any] | None] = []

    async def sleeps_first(change: Change, ctx: Context) -> None:
        tasks.append(asyncio.current_task())
        await asyncio.sleep(0)
        await ctx.index(index="users", id=change.pk, doc=change.row)

    async def with_timeout(change: Change, ctx: Context) -> None:
        async with asyncio.timeout(5):  # takes the current task: it must be the row's
            await ctx.index(index="other", id=change.pk, doc=change.row)

    registry = handled(sleeps_first)
    registry.add("shop.other", with_timeout)
    other = flat_message("shop", "other", "INSERT", [{"id": "9", "v": "0"}], mysql_types=TYPES)
    async with service(registry) as svc:
        await svc.feed(record(0, [(1, 1)]), SimpleNamespace(offset=1, value=other, timestamp=-1))
        await svc.settled()
        assert isinstance(tasks[0], asyncio.Task)
        assert sorted(change.pk for change in svc.handler_rows) == ["1", "9"]  # tasks, as before
        assert svc.es.docs == {("users", "1"): {"id": 1, "v": 1}, ("other", "9"): {"id": 9, "v": 0}}
        assert svc.committable() == 2


async def test_ctx_bulk_goes_on_in_a_task_from_where_it_is_awaited() -> None:
    async def two_at_once(change: Change, ctx: Context) -> None:
        items = await ctx.bulk([
            {"_op_type": "index", "_index": "users", "_id": change.pk, "_source": change.row},
            {"_op_type": "index", "_index": "copies", "_id": change.pk, "_source": change.row},
        ])
        assert [item["result"] for item in items] == ["created", "created"]
        await ctx.delete(index="copies", id=change.pk)

    async with service(handled(two_at_once)) as svc:
        await svc.feed(record(0, [(1, 1), (2, 2)]))
        await svc.settled()
        assert set(svc.es.docs) == {("users", "1"), ("users", "2")}
        assert svc.handler_rows == []
        assert svc.set_aside.failures == []
        assert svc.committable() == 1
        assert svc.writer._order == {}


async def test_a_refused_write_raises_in_the_handler_which_may_handle_it() -> None:
    caught: list[str] = []

    async def tolerant(change: Change, ctx: Context) -> None:
        try:
            await ctx.index(index="users", id=change.pk, doc=change.row)
        except BulkItemError as exc:
            caught.append(f"{exc.doc_id}: {exc.status}")

    es = FakeElasticsearch(fail_item=failing(
        lambda n, doc_id: (400, "mapper_parsing_exception") if doc_id == "2" else None))
    async with service(handled(tolerant), es) as svc:
        await svc.feed(record(0, [(1, 1), (2, 2)]))
        await svc.settled()
        assert caught == ["2: 400"]
        assert svc.es.docs == {("users", "1"): {"id": 1, "v": 1}}
        assert svc.set_aside.failures == []
        assert svc.committable() == 1
        assert svc.writer._order == {}


async def test_a_refused_write_not_handled_sets_the_row_aside_with_its_reason() -> None:
    async def index_user(change: Change, ctx: Context) -> None:
        await ctx.index(index="users", id=change.pk, doc=change.row)

    es = FakeElasticsearch(fail_item=failing(
        lambda n, doc_id: (400, "mapper_parsing_exception") if doc_id == "2" else None))
    async with service(handled(index_user), es) as svc:
        await svc.feed(record(0, [(1, 1), (2, 2)]))
        await svc.settled()
        [failure] = svc.set_aside.failures
        assert failure.position.offset == 0
        assert failure.row_index == 1
        assert "mapper_parsing_exception" in failure.reason
        assert failure.handler.endswith("index_user")
        assert svc.committable() == 1


async def test_a_retried_write_gives_the_handler_its_item_and_it_goes_on() -> None:
    after: list[str] = []

    async def index_then_note(change: Change, ctx: Context) -> None:
        item = await ctx.index(index="users", id=change.pk, doc=change.row)
        after.append(f"{change.pk}:{item['result']}")
        await ctx.upsert(index="notes", id=change.pk, doc={"seen": True})

    es = FakeElasticsearch(fail_item=failing(
        lambda n, doc_id: (429, "es_rejected_execution_exception") if n == 1 and doc_id == "1"
        else None))
    async with service(handled(index_then_note), es) as svc:
        await svc.feed(record(0, [(1, 1), (2, 2)]))
        await svc.settled()
        assert sorted(after) == ["1:created", "2:created"]
        assert svc.es.docs[("notes", "1")] == {"seen": True}
        assert svc.es.docs[("notes", "2")] == {"seen": True}
        assert svc.stats.es_retries >= 1
        assert svc.stats.handler_retries == 0
        assert svc.committable() == 1
        assert svc.writer._order == {}


async def test_a_handler_that_raises_is_retried_then_set_aside() -> None:
    runs: list[str] = []

    async def broken(change: Change, ctx: Context) -> None:
        runs.append(change.pk)
        if change.pk == "2":
            raise ValueError("no such shop")
        await ctx.index(index="users", id=change.pk, doc=change.row)

    async with service(handled(broken)) as svc:
        await svc.feed(record(0, [(1, 1), (2, 2)]))
        await svc.settled()
        assert runs.count("2") == MAX_ATTEMPTS
        [failure] = svc.set_aside.failures
        assert failure.reason == "ValueError: no such shop"
        assert failure.attempts == MAX_ATTEMPTS
        assert svc.es.docs == {("users", "1"): {"id": 1, "v": 1}}
        assert svc.committable() == 1


async def test_an_unawaited_write_is_the_handlers_failure_not_a_silent_success() -> None:
    async def forgets(change: Change, ctx: Context) -> None:
        ctx.index(index="users", id=change.pk, doc=change.row)  # type: ignore[unused-coroutine]

    async with service(handled(forgets)) as svc:
        await svc.feed(record(0, [(1, 1)]))
        await svc.settled()
        [failure] = svc.set_aside.failures
        assert "never awaited" in failure.reason
        assert svc.es.docs == {}
        assert svc.committable() == 1  # set aside: the stream goes on


async def test_a_cancelled_error_a_handler_raises_itself_is_its_failure() -> None:
    async def cancels(change: Change, ctx: Context) -> None:
        raise asyncio.CancelledError("from a library")

    async with service(handled(cancels)) as svc:
        await svc.feed(record(0, [(1, 1)]))
        await svc.settled()
        [failure] = svc.set_aside.failures
        assert "CancelledError" in failure.reason
        assert svc.committable() == 1


async def test_cancelling_a_batch_cancels_each_handler_where_it_awaits() -> None:
    cleaned: list[str] = []

    async def index_user(change: Change, ctx: Context) -> None:
        try:
            await ctx.index(index="users", id=change.pk, doc=change.row)
        except asyncio.CancelledError:
            cleaned.append(change.pk)
            raise

    es = HeldElasticsearch()
    async with service(handled(index_user), es) as svc:
        await svc.feed(record(0, [(1, 1), (2, 2)]))
        await wait_until(lambda: len(es.sent) == 1)
        assert svc.dispatcher.cancel_all() == 1
        es.open.set()
        await svc.settled()
        assert cleaned == ["1", "2"]
        assert svc.committable() is None  # never acknowledged here: the next owner's
        assert svc.stats.rows_done == 0
        assert sorted(svc.sensor.outcomes) == [("1", 0, "cancelled"), ("2", 0, "cancelled")]
        assert svc.writer._order == {}


async def test_a_handler_writing_nothing_for_a_hot_keys_many_rows_does_not_recurse() -> None:
    """Each of a key's rows in a batch begins when the one before is done: one with nothing
    to write is done at once, and the next must not begin inside it."""
    handled_rows: list[int] = []

    async def skips(change: Change, ctx: Context) -> None:
        handled_rows.append(change.position.offset)

    async with service(handled(skips), max_rows=3000) as svc:
        await svc.feed(*(record(offset, [(1, offset)]) for offset in range(2500)))
        await svc.settled()
        assert handled_rows == list(range(2500))
        assert svc.committable() == 2500
        await settle()
        assert svc.dispatcher.in_flight == 0


async def test_a_mapper_writing_nothing_for_a_hot_keys_many_rows_does_not_recurse() -> None:
    mapped_rows: list[int] = []

    def skips(change: Change) -> None:
        mapped_rows.append(change.position.offset)

    registry = Registry()
    registry.add_mapper("shop.users", skips)
    async with service(registry, max_rows=3000) as svc:
        await svc.feed(*(record(offset, [(1, offset)]) for offset in range(2500)))
        await svc.settled()
        assert mapped_rows == list(range(2500))
        assert svc.committable() == 2500
        assert svc.dispatcher.in_flight == 0


async def test_a_write_called_while_stepped_and_awaited_in_a_task_is_an_ordinary_write() -> None:
    sink = MemorySink()
    ctx = Context(sink, None, make_change("shop", "users", "INSERT", {"id": 1}))
    ctx.driving = True  # as while its batch steps the handler
    write = ctx.index(index="users", id="1", doc={"v": 1})
    never = ctx.delete(index="users", id="2")
    ctx.driving = False
    assert ctx.unfinished()
    assert (await write)["result"] == "created"  # through the sink, not yielded to a batch
    assert sink.get("users", "1") == {"v": 1}
    error = ctx.unawaited_error("h")
    assert error is not None
    assert "ctx.delete(...) was never awaited" in str(error)
    assert "ctx.index" not in str(error)
    with pytest.raises(RuntimeError, match="already awaited"):
        await write
    del never


# -- which handlers a batch steps ----------------------------------------------------------------


async def writes_only(change: Change, ctx: Context) -> None:
    if change.is_delete:
        await ctx.delete(index="users", id=change.pk)
        return
    doc = {**change.row, "names": [name.upper() for name in change.row]}
    item = await ctx.index(index="users", id=change.pk, doc=doc)
    for copy in ("a", "b"):
        await ctx.upsert(index=copy, id=item["_id"], doc=doc)


async def reads_first(change: Change, ctx: Context) -> None:
    await ctx.es.get(index="shops", id="1")
    await ctx.index(index="users", id=change.pk, doc=change.row)


async def awaits_a_helper(change: Change, ctx: Context) -> None:
    await writes_only(change, ctx)


async def times_out(change: Change, ctx: Context) -> None:
    async with asyncio.timeout(1):
        await ctx.index(index="users", id=change.pk, doc=change.row)


async def rebinds(change: Change, ctx: Context) -> None:
    ctx = ctx.es  # type: ignore[assignment]
    await ctx.index(index="users", id=change.pk, doc=change.row)


async def discards(change: Change, ctx: Context) -> None:
    if change.is_delete:
        await ctx.delete(index="users", id=change.pk)
    else:
        await ctx.index(index="users", id=change.pk, doc=change.row)


async def returns_an_item(change: Change, ctx: Context) -> dict[str, Any]:
    return await ctx.index(index="users", id=change.pk, doc=change.row)


class Methods:
    async def handle(self, change: Change, ctx: Context) -> None:
        await ctx.write({"_index": "users", "_id": change.pk, "_source": change.row})


def test_a_handler_awaiting_only_its_writes_is_stepped_and_no_other() -> None:
    registry = Registry()
    registry.add("shop.a", writes_only)
    registry.add("shop.b", Methods().handle)
    registry.add("shop.c", reads_first)
    registry.add("shop.d", awaits_a_helper)
    registry.add("shop.e", times_out)
    registry.add("shop.f", rebinds)
    registry.add("shop.g", _made_at_run_time())  # no source file to read
    registry.add("shop.h", _with_a_timeout(writes_only))  # the wrapper is what runs
    steppable = {route.pattern: route.steppable for route in registry.routes}
    assert steppable == {"shop.a": True, "shop.b": True, "shop.c": False, "shop.d": False,
                         "shop.e": False, "shop.f": False, "shop.g": False, "shop.h": False}


def test_only_a_handler_that_may_read_its_writes_items_gets_whole_ones() -> None:
    registry = Registry()
    registry.add("shop.a", writes_only)  # item = await ctx.index(...)
    registry.add("shop.b", Methods().handle)  # await ctx.write(...) alone
    registry.add("shop.c", discards)
    registry.add("shop.d", returns_an_item)
    registry.add("shop.e", _made_at_run_time())  # no source: assumed to read them
    reads = {route.pattern: route.reads_items for route in registry.routes}
    assert reads == {"shop.a": True, "shop.b": False, "shop.c": False, "shop.d": True,
                     "shop.e": True}


async def forgets_one(change: Change, ctx: Context) -> None:
    ctx.delete(index="old", id=change.pk)  # type: ignore[unused-coroutine]
    await ctx.index(index="users", id=change.pk, doc=change.row)


async def keeps_a_write(change: Change, ctx: Context) -> None:
    write = ctx.index(index="users", id=change.pk, doc=change.row)
    await write


async def passes_ctx_on(change: Change, ctx: Context) -> None:
    _helper(ctx)
    await ctx.index(index="users", id=change.pk, doc=change.row)


async def writes_in_a_lambda(change: Change, ctx: Context) -> None:
    later = lambda: ctx.delete(index="old", id=change.pk)  # noqa: E731
    del later
    await ctx.index(index="users", id=change.pk, doc=change.row)


async def reads_and_logs(change: Change, ctx: Context) -> None:
    ctx.log.info("row %s of %s", change.pk, ctx.change.table)
    item = await ctx.index(index="users", id=change.pk, doc=change.row)
    if item["result"] != "created":
        await ctx.delete(index="old", id=change.pk)


def _helper(ctx: Context) -> None:
    pass


def test_only_a_handler_awaiting_each_write_where_it_calls_it_skips_the_unawaited_check(
) -> None:
    registry = Registry()
    registry.add("shop.a", writes_only)
    registry.add("shop.b", Methods().handle)
    registry.add("shop.c", reads_and_logs)  # ctx.log, ctx.change: reading leaves no write
    registry.add("shop.d", forgets_one)
    registry.add("shop.e", keeps_a_write)
    registry.add("shop.f", passes_ctx_on)
    registry.add("shop.g", writes_in_a_lambda)
    registry.add("shop.h", rebinds)
    registry.add("shop.i", _made_at_run_time())
    checked = {route.pattern: route.awaits_every_write for route in registry.routes}
    assert checked == {"shop.a": True, "shop.b": True, "shop.c": True, "shop.d": False,
                       "shop.e": False, "shop.f": False, "shop.g": False, "shop.h": False,
                       "shop.i": False}


async def test_a_stepped_handler_forgetting_a_write_beside_awaited_ones_is_still_caught(
) -> None:
    """Its other writes are awaited where called, but not all: the check stays on."""
    async with service(handled(forgets_one)) as svc:
        await svc.feed(record(0, [(1, 1)]))
        await svc.settled()
        [failure] = svc.set_aside.failures
        assert "ctx.delete(...) was never awaited" in failure.reason
        assert svc.committable() == 1


async def test_a_handler_discarding_its_items_asks_for_statuses_and_one_reading_them_for_all(
) -> None:
    async def reads(change: Change, ctx: Context) -> None:
        item = await ctx.index(index="users", id=change.pk, doc=change.row)
        seen.append(item)

    seen: list[dict[str, Any]] = []
    for handler, status_only in ((discards, True), (reads, False)):
        async with service(handled(handler)) as svc:
            await svc.feed(record(0, [(1, 10), (2, 20)]))
            await svc.settled()
            assert svc.es.docs == {("users", "1"): {"id": 1, "v": 10},
                                   ("users", "2"): {"id": 2, "v": 20}}
            (call,) = svc.es.calls
            asked = call.filter_path
            assert (asked == "items.*.status,items.*.error") == status_only, asked
    assert [(item["_id"], item["result"], item["status"]) for item in seen] == [
        ("1", "created", 201), ("2", "created", 201)]


def test_check_says_which_handlers_are_stepped_and_which_run_in_tasks() -> None:
    registry = Registry()
    registry.add("shop.a", writes_only)
    registry.add("shop.b", writes_only, types={"DELETE"})  # one handler, named once
    registry.add("shop.c", reads_first)
    registry.add_mapper("shop.d", lambda change: None)  # a mapper: neither
    stepped, in_tasks = handler_paths(registry.routes)
    assert stepped == ("stepped by their batch (they await only their ctx writes): "
                       "tests.unit.test_driven_handlers:writes_only")
    assert in_tasks == ("a task per row (they await more than their ctx writes): "
                        "tests.unit.test_driven_handlers:reads_first")


def _with_a_timeout(handler: Any) -> Any:
    @functools.wraps(handler)
    async def wrapper(change: Change, ctx: Context) -> None:
        async with asyncio.timeout(1):
            await handler(change, ctx)

    return wrapper


def _made_at_run_time() -> Any:
    namespace: dict[str, Any] = {}
    exec("async def made(change, ctx):\n    await ctx.index(index='x', id='1', doc={})\n",
         namespace)
    return namespace["made"]
