"""A fetch's mapped rows settled together (esupdater.mapped_batch, BulkWriter.queue_group).

The same service as tests/unit/test_mapped_rows.py (whose tests all run through batches
too): here, what is particular to a batch. One holder in the pool for the fetch's rows, a
key coming back in the same fetch, a whole group failing, a document that another write
holds, cancelling, and groups split by the request's byte limit.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from elasticsearch import ConnectionError as EsConnectionError

from esupdater.actions import Action
from esupdater.backoff import Backoff
from esupdater.bulk import BulkLimits, BulkWriter, Group
from esupdater.mapped_batch import MappedBatch
from esupdater.stats import Stats
from tests.unit.fake_elasticsearch import FakeElasticsearch
from tests.unit.test_mapped_rows import (
    QUICK,
    TP,
    HeldElasticsearch,
    counted,
    failing,
    mapped,
    record,
    service,
    settle,
    user_document,
    wait_until,
)


async def test_a_fetchs_mapped_rows_are_one_holder_in_the_pool_and_one_request() -> None:
    es = HeldElasticsearch()
    async with service(mapped(), es) as svc:
        await svc.feed(*(record(offset, [(offset + 1, 1)]) for offset in range(5)))
        await wait_until(lambda: len(es.sent) == 1)
        await settle()
        (holder,) = svc.dispatcher._tasks
        assert isinstance(holder, MappedBatch)
        assert svc.dispatcher.in_flight == 5  # a slot per row all the same
        assert svc.dispatcher.keys_in_flight == 5
        assert es.sent[0].count(b'"index"') == 5
        es.open.set()
        await svc.settled()
        assert svc.committable() == 5
        assert svc.stats.rows_done == 5
        assert svc.dispatcher.in_flight == 0
        assert svc.dispatcher.keys_in_flight == 0
        assert svc.writer._order == {}
        assert sorted(outcome for _, _, outcome in svc.sensor.outcomes) == ["done"] * 5


async def test_a_key_back_in_the_same_fetch_is_written_once_its_earlier_row_is_done() -> None:
    es = HeldElasticsearch()
    mapper, calls = counted(user_document)
    async with service(mapped(mapper), es) as svc:
        await svc.feed(record(0, [(1, 1)]), record(1, [(1, 2)]), record(2, [(2, 1)]),
                       record(3, [(1, 3)]))
        await wait_until(lambda: len(es.sent) == 1)
        await settle()
        assert [change.row["v"] for change in calls] == [1, 1]  # users/1 v=1, users/2
        assert svc.committable() is None
        es.open.set()
        await svc.settled()
        assert [body["v"] for body in svc.written("1")] == [1, 2, 3]
        assert [len(call.actions) for call in es.calls] == [2, 1, 1]
        assert svc.es.docs[("users", "1")] == {"id": 1, "v": 3}
        assert len(calls) == 4  # each row mapped once
        assert svc.handler_rows == []
        assert svc.committable() == 4
        assert svc.dispatcher.keys_in_flight == 0


async def test_a_key_back_in_the_same_fetch_waits_for_its_earlier_rows_retry() -> None:
    es = FakeElasticsearch(fail_item=failing(
        lambda n, doc_id: (429, "es_rejected_execution_exception") if n == 1 and doc_id == "1"
        else None))
    async with service(mapped(), es) as svc:
        await svc.feed(record(0, [(1, 1)]), record(1, [(2, 1)]), record(2, [(1, 2)]))
        await svc.settled()
        assert [body["v"] for body in svc.written("1")] == [1, 1, 2]  # failed, retried, next
        assert svc.es.docs[("users", "1")] == {"id": 1, "v": 2}
        assert svc.stats.rows_done == 3
        assert svc.committable() == 3
        assert svc.writer._order == {}


async def test_a_key_back_in_the_same_fetch_waits_for_its_earlier_rows_mapper_retry() -> None:
    failed_once: list[str] = []

    def flaky(change: Any) -> Action:
        if change.row["v"] == 1 and not failed_once:
            failed_once.append(change.pk)
            raise RuntimeError("not yet")
        return user_document(change)

    async with service(mapped(flaky)) as svc:
        await svc.feed(record(0, [(1, 1)]), record(1, [(1, 2)]))
        await svc.settled()
        assert failed_once == ["1"]
        assert [body["v"] for body in svc.written("1")] == [1, 2]
        assert svc.stats.rows_done == 2
        assert svc.set_aside.failures == []


async def test_a_failed_request_retries_every_row_of_the_batch() -> None:
    es = FakeElasticsearch(
        fail_request=lambda n: EsConnectionError("connection refused") if n == 1 else None)
    async with service(mapped(), es) as svc:
        await svc.feed(*(record(offset, [(offset + 1, offset)]) for offset in range(3)))
        await svc.settled()
        assert len(es.calls) >= 2
        assert svc.es.docs == {("users", str(i + 1)): {"id": i + 1, "v": i} for i in range(3)}
        assert svc.stats.rows_done == 3
        assert svc.stats.es_retries == 3
        assert svc.committable() == 3
        assert svc.writer._order == {}
        assert svc.handler_rows == []


async def test_a_document_another_write_holds_is_written_after_it() -> None:
    es = HeldElasticsearch()
    async with service(mapped(), es) as svc:
        held = asyncio.create_task(
            svc.writer.execute({"_index": "users", "_id": "1", "_source": {"v": 0}}))
        await wait_until(lambda: len(es.sent) == 1)
        await svc.feed(record(0, [(1, 1)]), record(1, [(2, 1)]))
        await settle()
        es.open.set()
        await held
        await svc.settled()
        assert [body["v"] for body in svc.written("1")] == [0, 1]
        assert svc.es.docs[("users", "1")] == {"id": 1, "v": 1}
        assert svc.stats.rows_done == 2
        assert svc.writer._order == {}


async def test_cancelling_a_batch_withdraws_its_unsent_writes_and_gives_back_its_slots(
) -> None:
    es = HeldElasticsearch()
    async with service(mapped(), es, writer_backoff=Backoff(5.0, 5.0)) as svc:
        await svc.feed(record(0, [(9, 9)]))
        await wait_until(lambda: len(es.sent) == 1)  # the lane is busy with this one
        await svc.feed(record(1, [(1, 1)]), record(2, [(2, 1)]), record(3, [(1, 2)]))
        await settle()
        assert svc.dispatcher.in_flight == 4
        assert svc.dispatcher.cancel_all() == 2  # two batches
        await settle()
        assert svc.dispatcher.in_flight == 0
        assert svc.writer._order == {}
        es.open.set()
        await settle(30)
        assert [len(call.actions) for call in es.calls] == [1]  # the rest never sent
        assert svc.stats.rows_done == 0
        assert sorted(outcome for _, _, outcome in svc.sensor.outcomes) == ["cancelled"] * 3
        result = await asyncio.wait_for(
            svc.writer.execute({"_index": "users", "_id": "1", "_source": {"v": 7}}), 1)
        assert result["status"] in (200, 201)


class _Owner:
    """A group's owner that keeps the answers."""

    def __init__(self) -> None:
        self.answered: list[tuple[Group, dict[int, Any]]] = []

    def done(self) -> bool:
        return False

    def group_answered(self, group: Group, odd: dict[int, Any], answers: Any) -> None:
        self.answered.append((group, odd))


async def test_a_group_larger_than_a_request_may_be_is_split_by_bytes() -> None:
    es = FakeElasticsearch()
    writer = BulkWriter(cast(Any, es), BulkLimits(max_chunk_bytes=400, max_in_flight=1),
                        QUICK, stats=Stats())
    await writer.start()
    owner = _Owner()
    try:
        rows = [(n, {"_op_type": "index", "_index": "users", "_id": str(n),
                     "_source": {"text": "x" * 100}}) for n in range(10)]
        left_out, groups = writer.queue_group(owner, rows)
        assert left_out == []
        assert len(groups) > 1
        await wait_until(lambda: len(owner.answered) == len(groups))
        assert sorted(n for group, _ in owner.answered for n in group.rows) == list(range(10))
        assert all(odd == {} for _, odd in owner.answered)
        assert all(len(call.actions) <= 3 for call in es.calls)  # 400 bytes: 3 of ~130
        assert len(es.docs) == 10
        assert writer._order == {}
    finally:
        await writer.close()


async def test_a_group_leaves_out_what_it_cannot_take_for_its_owner_to_send_alone() -> None:
    writer = BulkWriter(cast(Any, FakeElasticsearch()), BulkLimits(), QUICK, stats=Stats())
    await writer.start()
    owner = _Owner()
    try:
        rows: list[tuple[int, Action]] = [
            (0, {"_op_type": "index", "_index": "users", "_source": {}}),  # no id
            (1, {"_op_type": "index", "_index": "users", "_id": "1", "_source": {}}),
            (2, {"_op_type": "index", "_index": "users", "_id": "1", "_source": {}}),  # again
            (3, {"_op_type": "index", "_index": "users", "_id": ["x"], "_source": {}}),
            (4, {"_op_type": "index", "_index": "users", "_id": "4", "_source": {1j: 1}}),
        ]
        left_out, groups = writer.queue_group(owner, rows)
        assert left_out == [0, 2, 3, 4]
        assert [group.rows for group in groups] == [[1]]
        await wait_until(lambda: len(owner.answered) == 1)
        assert writer._order == {}
    finally:
        await writer.close()


async def test_a_key_whose_row_is_in_an_earlier_batch_follows_it_there() -> None:
    es = HeldElasticsearch()
    mapper, calls = counted(user_document)
    async with service(mapped(mapper), es) as svc:
        await svc.feed(record(0, [(1, 1)]))
        await wait_until(lambda: len(es.sent) == 1)
        await svc.feed(record(1, [(1, 2)]), record(2, [(2, 1)]))
        await settle()
        assert len(calls) == 2  # users/1 v=1 and users/2: v=2 waits for v=1
        assert len(svc.dispatcher._tasks) == 2  # the two batches; users/1 v=2 in the first
        assert svc.dispatcher.in_flight == 3
        es.open.set()
        await svc.settled()
        assert [body["v"] for body in svc.written("1")] == [1, 2]
        assert svc.handler_rows == []
        assert svc.committable() == 3
        assert svc.dispatcher.in_flight == 0
        assert svc.dispatcher.keys_in_flight == 0


async def test_a_key_done_in_a_batch_is_free_before_the_rest_of_the_batch() -> None:
    failing_now = True
    es = FakeElasticsearch(fail_item=failing(
        lambda n, doc_id: (429, "es_rejected_execution_exception")
        if doc_id == "2" and failing_now else None))
    async with service(mapped(), es, writer_backoff=Backoff(5.0, 5.0)) as svc:
        await svc.feed(record(0, [(1, 1)]), record(1, [(2, 1)]))
        await wait_until(lambda: ("users", "1") in es.docs)
        await settle()
        await svc.feed(record(2, [(1, 2)]))  # users/2 is still waiting for its retry
        await wait_until(lambda: es.docs[("users", "1")]["v"] == 2)
        assert svc.committable() == 1  # offset 1 (users/2) holds the commit point back
        assert svc.stats.rows_done == 2
        failing_now = False


async def test_a_row_done_in_a_batch_gives_back_its_slot_and_is_let_go_of() -> None:
    failing_now = True
    es = FakeElasticsearch(fail_item=failing(
        lambda n, doc_id: (429, "es_rejected_execution_exception")
        if doc_id == "2" and failing_now else None))
    async with service(mapped(), es, max_rows=2, writer_backoff=Backoff(5.0, 5.0)) as svc:
        await svc.feed(record(0, [(1, 1)]), record(1, [(2, 1)]))
        await wait_until(lambda: ("users", "1") in es.docs)
        await settle()
        (batch,) = svc.dispatcher._tasks
        assert isinstance(batch, MappedBatch)
        assert batch.entries[0] is None  # users/1: done, not pinned by the batch
        assert svc.dispatcher.in_flight == 1  # users/2's row, waiting for its retry
        # The pool holds two rows: with users/1's slot free, users/3 goes through now.
        await svc.feed(record(2, [(3, 1)]))
        await wait_until(lambda: ("users", "3") in es.docs)
        assert svc.stats.rows_done == 2
        assert svc.committable() == 1
        failing_now = False


async def test_a_row_let_in_by_a_freed_slot_follows_its_key_in_its_batch() -> None:
    """The pool is full; a slot frees up while the row's key is in a batch that has another
    unfinished row: the row follows its key's row there, and does not wait for all of it."""
    slow_doc_failing = True
    es = FakeElasticsearch(fail_item=failing(
        lambda n, doc_id: (429, "es_rejected_execution_exception")
        if (doc_id == "1" and n == 1) or (doc_id == "3" and slow_doc_failing) else None))
    async with service(mapped(), es, max_rows=3, writer_backoff=Backoff(0.01, 0.02)) as svc:
        feeding = asyncio.create_task(svc.feeder.feed_records(
            TP, [record(0, [(1, 1)]), record(1, [(3, 1)]), record(2, [(2, 1)]),
                 record(3, [(1, 2)])], lambda: True))
        await wait_until(lambda: es.docs.get(("users", "1"), {}).get("v") == 2)
        assert ("users", "3") not in es.docs  # its batch is not done
        assert len(svc.dispatcher._tasks) == 1  # one batch: the row followed there
        slow_doc_failing = False
        assert await feeding
        await svc.settled()
        assert svc.committable() == 4
        assert svc.handler_rows == []


async def test_rows_of_several_tables_and_types_in_a_fetch_each_take_their_own_route() -> None:
    """Feeding looks a row's routes up again only when its table or type differs from the
    row before's: records alternating tables and types, and one (protobuf) holding several,
    must each reach their own route, or none."""
    from types import SimpleNamespace

    from esupdater.canal.build import flat_message, protobuf_packet, protobuf_row_entry
    from esupdater.change import Change
    from esupdater.context import Context

    types = {"id": "int", "v": "int"}
    orders: list[tuple[str, str]] = []

    async def on_order(change: Change, ctx: Context) -> None:
        orders.append((change.type, change.pk))
        await ctx.index(index="orders", id=change.pk, doc=change.row)

    def order(offset: int, type_: str, order_id: int, v: int) -> SimpleNamespace:
        old = [{"v": "0"}] if type_ == "UPDATE" else None
        value = flat_message("shop", "orders", type_, [{"id": str(order_id), "v": str(v)}],
                             mysql_types=types, old=old)
        return SimpleNamespace(offset=offset, value=value, timestamp=-1)

    def entry(table: str, type_: str, row_id: int, v: int) -> bytes:
        old = [{"v": "0"}] if type_ == "UPDATE" else None
        return protobuf_row_entry("shop", table, type_, [{"id": str(row_id), "v": str(v)}],
                                  mysql_types=types, old=old)

    mixed = protobuf_packet([entry("orders", "INSERT", 7, 1), entry("users", "INSERT", 8, 1),
                             entry("orders", "UPDATE", 7, 2), entry("logs", "INSERT", 9, 1),
                             entry("users", "UPDATE", 8, 2)])
    registry = mapped()
    registry.add("shop.orders", on_order, types={"INSERT"})
    async with service(registry) as svc:
        await svc.feed(record(0, [(1, 1)]), order(1, "INSERT", 2, 1),
                       SimpleNamespace(offset=2, value=mixed, timestamp=-1),
                       record(3, [(1, 2)], "UPDATE", old=[{"v": "1"}]),
                       order(4, "UPDATE", 2, 2), order(5, "INSERT", 3, 1))
        await svc.settled()
        assert orders == [("INSERT", "2"), ("INSERT", "7"), ("INSERT", "3")]
        assert svc.es.docs == {
            ("users", "1"): {"id": 1, "v": 2},
            ("users", "8"): {"id": 8, "v": 2},
            ("orders", "2"): {"id": 2, "v": 1},
            ("orders", "7"): {"id": 7, "v": 1},
            ("orders", "3"): {"id": 3, "v": 1},
        }
        assert svc.stats.unrouted == 3  # both orders UPDATEs, the logs row
        assert svc.committable() == 6
