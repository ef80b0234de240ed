"""What the hot path shares or skips per row must not change what a row gets: the row
typers kept per schema, the cached execution time, requests built from pre-serialised
lines, and submitting without waiting."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import orjson
import pytest

from esupdater.backoff import Backoff
from esupdater.bulk import BulkLimits, BulkWriter
from esupdater.canal import CanalDecoder, flat_message
from esupdater.canal.errors import CanalDecodeError
from esupdater.change import Position
from esupdater.dispatch import KeyedDispatcher
from tests.unit.fake_elasticsearch import FakeElasticsearch

QUICK = Backoff(0.001, 0.01)


def decode(value: bytes, offset: int = 0) -> list[Any]:
    return CanalDecoder().decode(value, Position("t", 0, offset))


def test_messages_with_the_same_columns_but_other_types_are_typed_by_their_own() -> None:
    as_decimal = flat_message("db", "t", "INSERT", [{"id": "1", "v": "2.50"}],
                              mysql_types={"id": "int", "v": "decimal(4,2)"})
    as_text = flat_message("db", "t", "INSERT", [{"id": "1", "v": "2.50"}],
                           mysql_types={"id": "int", "v": "varchar(8)"})
    as_bool = flat_message("db", "t", "INSERT", [{"id": "1", "v": "1"}],
                           mysql_types={"id": "int", "v": "tinyint(1)"})
    for _ in range(2):  # the second round finds the typers kept by the first
        assert decode(as_decimal)[0].row == {"id": 1, "v": Decimal("2.50")}
        assert decode(as_text)[0].row == {"id": 1, "v": "2.50"}
        assert decode(as_bool)[0].row == {"id": 1, "v": 1}
        bools = CanalDecoder(tinyint1_as_bool=True).decode(as_bool, Position("t", 0, 0))
        assert bools[0].row == {"id": 1, "v": True}


def test_a_bad_value_names_its_own_record_when_the_typer_is_shared() -> None:
    types = {"id": "int", "v": "int"}
    good = flat_message("db", "t", "INSERT", [{"id": "1", "v": "2"}], mysql_types=types)
    bad = flat_message("db", "t", "INSERT", [{"id": "1", "v": "two"}], mysql_types=types)
    decode(good, offset=5)
    with pytest.raises(CanalDecodeError, match=r"t/0@6: .*column 'v'"):
        decode(bad, offset=6)


def test_each_record_gets_its_own_execution_time() -> None:
    times = [1_700_000_000_000, 1_700_000_000_000, 1_700_000_000_500, 1_700_000_000_000]
    for es_ms in times:
        value = flat_message("db", "t", "INSERT", [{"id": "1"}], mysql_types={"id": "int"},
                             es_ms=es_ms)
        assert decode(value)[0].executed_at == datetime.fromtimestamp(es_ms / 1000, tz=UTC)


async def test_a_batch_is_one_request_and_max_chunk_bytes_splits_it_in_order() -> None:
    es = FakeElasticsearch()
    limits = BulkLimits(chunk_size=1000, max_chunk_bytes=2048, max_in_flight=1)
    writer = BulkWriter(cast(Any, es), limits, QUICK)
    await writer.start()
    try:
        actions = [{"_index": "i", "_id": str(n % 7), "_source": {"n": n, "pad": "x" * 40}}
                   for n in range(100)]
        results = await asyncio.wait_for(
            asyncio.gather(*(writer.execute(a) for a in actions)), 5
        )
    finally:
        await writer.close()
    assert all(r["status"] in (200, 201) for r in results)
    assert 1 < len(es.calls) < len(actions)  # batched, and split by bytes
    sent = [doc_id for call in es.calls for _, _, doc_id, _ in call.actions]
    assert sorted(sent, key=int) == sorted((str(n % 7) for n in range(100)), key=int)
    for doc_id in map(str, range(7)):  # each document's last write is the one that stays
        last = max(n for n in range(100) if str(n % 7) == doc_id)
        assert es.docs[("i", doc_id)]["n"] == last


async def test_delete_update_and_extra_metadata_go_into_the_action_line() -> None:
    es = FakeElasticsearch()
    writer = BulkWriter(cast(Any, es), BulkLimits(max_in_flight=1), QUICK)
    await writer.start()
    try:
        await writer.execute({"_index": "i", "_id": "1", "_source": {"a": 1}, "routing": "r"})
        upsert = {"_op_type": "update", "_index": "i", "_id": "1", "doc": {"b": 2},
                  "doc_as_upsert": True}
        await writer.execute(upsert)
        await writer.execute({"_op_type": "delete", "_index": "i", "_id": "2"})
    finally:
        await writer.close()
    actions = [action for call in es.calls for action in call.actions]
    assert actions == [
        ("index", "i", "1", {"a": 1}),
        ("update", "i", "1", {"doc": {"b": 2}, "doc_as_upsert": True}),
        ("delete", "i", "2", None),
    ]
    assert es.docs[("i", "1")] == {"a": 1, "b": 2}


async def test_submit_nowait_takes_a_free_slot_and_never_waits() -> None:
    dispatcher = KeyedDispatcher(2)
    gate = asyncio.Event()
    order: list[str] = []

    def job(name: str) -> Any:
        async def run() -> None:
            await gate.wait()
            order.append(name)
        return run

    first = dispatcher.submit_nowait("a", job("a1"))
    second = dispatcher.submit_nowait("a", job("a2"))
    assert first is not None
    assert second is not None
    assert dispatcher.submit_nowait("b", job("b")) is None  # full: nothing admitted
    assert dispatcher.in_flight == 2
    gate.set()
    await dispatcher.drain(timeout=5)
    assert order == ["a1", "a2"]  # the same key still in submission order


class _RecordingElasticsearch(FakeElasticsearch):
    """Keeps each request's body as the writer handed it to the client."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[Any] = []

    async def bulk(self, *, operations: bytes | list[bytes], **kwargs: Any) -> Any:
        self.bodies.append(operations)
        return await super().bulk(operations=operations, **kwargs)


async def test_a_request_is_one_ndjson_body_of_every_line() -> None:
    es = _RecordingElasticsearch()
    writer = BulkWriter(cast(Any, es), BulkLimits(max_in_flight=1), QUICK)
    await writer.start()
    try:
        await asyncio.gather(
            writer.execute({"_index": "i", "_id": "1", "_source": {"a": 1}}),
            writer.execute({"_op_type": "delete", "_index": "i", "_id": "2"}),
            writer.execute({"_index": "i", "_id": "3", "_source": {"c": "x\ny"}}),
        )
    finally:
        await writer.close()
    assert len(es.bodies) == 1
    body = es.bodies[0]
    assert isinstance(body, bytes)
    assert body.split(b"\n") == [
        b'{"index":{"_index":"i","_id":"1"}}', b'{"a":1}',
        b'{"delete":{"_index":"i","_id":"2"}}',
        b'{"index":{"_index":"i","_id":"3"}}', b'{"c":"x\\ny"}',
        b"",  # the body ends with a newline
    ]


def test_the_dispatcher_works_in_one_event_loop_after_another() -> None:
    """The dispatcher keeps its event loop while jobs are in flight (looking it up costs a
    system call per row): a later loop must get its own, not the closed one."""
    dispatcher = KeyedDispatcher(4)
    docs: dict[tuple[str, str], Any] = {}
    done: list[int] = []

    async def one_round(n: int) -> None:
        es = FakeElasticsearch()
        writer = BulkWriter(cast(Any, es), BulkLimits(max_in_flight=1), QUICK)
        await writer.start()
        try:
            async def job() -> None:
                await writer.execute({"_index": "i", "_id": str(n), "_source": {"n": n}})
                done.append(n)

            assert dispatcher.submit_nowait(("db", "t", str(n)), job) is not None
            assert await dispatcher.drain(timeout=5)
        finally:
            await writer.close()
        docs.update(es.docs)

    for n in range(3):
        asyncio.run(one_round(n))
    assert done == [0, 1, 2]
    assert docs == {("i", str(n)): {"n": n} for n in range(3)}


def test_a_table_whose_types_change_is_typed_by_the_new_ones_and_back() -> None:
    before = flat_message("db", "t", "INSERT", [{"id": "1", "v": "7"}],
                          mysql_types={"id": "int", "v": "int"})
    after = flat_message("db", "t", "INSERT", [{"id": "1", "v": "7"}],
                         mysql_types={"id": "int", "v": "varchar(8)"})
    other = flat_message("db", "u", "INSERT", [{"id": "1", "v": "7"}],
                         mysql_types={"id": "int", "v": "varchar(8)"})
    assert decode(before)[0].row == {"id": 1, "v": 7}
    assert decode(other)[0].row == {"id": 1, "v": "7"}
    assert decode(after)[0].row == {"id": 1, "v": "7"}  # an ALTER changed the column
    assert decode(before)[0].row == {"id": 1, "v": 7}  # a replayed older record
    assert decode(other)[0].row == {"id": 1, "v": "7"}


@pytest.mark.parametrize("action", [
    {"_op_type": "index", "_index": "users", "_id": "1", "_source": {"a": 1}},
    {"_op_type": "index", "_index": "users", "_id": 'quo"te\\', "_source": {}},
    {"_op_type": "index", "_index": "other", "_id": 7, "_source": {"n": None}},
    {"_op_type": "delete", "_index": "users", "_id": "ü/2"},
    {"_op_type": "index", "_index": "users", "_id": "1", "_source": {"a": 1}, "version": 3,
     "version_type": "external"},
    {"_op_type": "delete", "_index": "users", "_id": "2", "routing": "r"},
    {"_index": "users", "_id": "3", "_source": {"b": 2}},
])
def test_the_action_lines_kept_per_index_say_what_the_general_path_says(
    action: dict[str, Any],
) -> None:
    writer = BulkWriter(cast(Any, FakeElasticsearch()), BulkLimits(), QUICK)
    for _ in range(2):  # the second time the index's action-line prefix is a kept one
        lines: list[bytes] = []
        size = writer._lines(dict(action), lines)
        op_type = action.get("_op_type", "index")
        meta = {k: v for k, v in action.items() if k not in ("_op_type", "_source")}
        assert orjson.loads(lines[0]) == {op_type: meta}
        if op_type == "delete":
            assert len(lines) == 1
        else:
            assert orjson.loads(lines[1]) == action["_source"]
        assert size == sum(len(line) + 1 for line in lines)


def _slots(obj: object) -> dict[str, Any]:
    """Every slot of `obj` up its classes, unset ones as a marker (so none can be missed)."""
    names = [name for cls in type(obj).__mro__ for name in getattr(cls, "__slots__", ())]
    assert names, f"{type(obj).__name__} has no slots"
    return {name: getattr(obj, name, "<unset>") for name in names}


@pytest.mark.parametrize(("type_", "pk_names", "old", "old_pk"), [
    ("INSERT", ("id",), None, None),
    ("UPDATE", ("id",), {"id": "6"}, "6"),
    ("DELETE", ("id",), None, None),
    ("UPDATE", ("a", "b"), {"b": "x:y"}, "1:x\\:y"),  # a composite key, escaped
    ("INSERT", (), None, None),  # no primary key
])
def test_the_hot_path_constructors_build_what_the_ordinary_ones_build(
    type_: str, pk_names: tuple[str, ...], old: dict[str, Any] | None, old_pk: str | None,
) -> None:
    """row_change and new_position skip the dataclasses' __init__; every slot, the derived
    ones (`pk`, `is_*`) included, must come out as the ordinary constructor sets it."""
    from esupdater.change import Change, new_position, row_change

    raw: dict[str, str | None] = {"id": "7", "a": "1", "b": "2"}
    when = datetime(2024, 3, 1, tzinfo=UTC)
    position = Position("t", 3, 12)
    changed = frozenset(old or ())
    fast = row_change("db", "t", type_, {"id": 7}, old, pk_names, raw, when,
                      new_position("t", 3, 12), 2, changed, old_pk)
    ordinary = Change("db", "t", type_, {"id": 7}, old, pk_names, raw, when, "", position, 2,
                      False, changed, old_pk)
    assert _slots(fast) == _slots(ordinary)
    assert _slots(fast.position) == _slots(position)
    assert fast == ordinary
    assert fast.is_delete == (type_ == "DELETE")
    assert fast.pk == ("7" if pk_names == ("id",) else "1:2" if pk_names else "")


def test_a_stepped_handlers_context_is_the_one_its_constructor_makes() -> None:
    from esupdater.context import Context, stepped_context
    from esupdater.testing import make_change

    change = make_change("db", "t", row={"id": 1})
    sink = cast(Any, object())
    fast, ordinary = stepped_context(sink, None, change), Context(sink, None, change)
    assert _slots(fast) == _slots(ordinary)
    assert fast._writes is not ordinary._writes  # one list each


def test_a_grouped_rows_ticket_is_the_one_its_constructor_makes() -> None:
    """queue_group builds each grouped row's Ticket without its __init__."""
    from esupdater.bulk import Ticket

    class Owner:
        def done(self) -> bool:
            return False

    async def main() -> dict[str, Any]:
        writer = BulkWriter(cast(Any, FakeElasticsearch()), BulkLimits(), QUICK)
        action = {"_op_type": "index", "_index": "i", "_id": "1", "_source": {"a": 1}}
        left_out, groups = writer.queue_group(cast(Any, Owner()), [(0, action)])
        assert left_out == []
        (group,) = groups
        (ticket,) = group.tickets
        return _slots(ticket)

    assert asyncio.run(main()) == _slots(Ticket(None))
