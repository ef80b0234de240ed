"""BackfillSink: what a backfilled row's handlers send can never replace a document."""

from __future__ import annotations

from typing import Any

from esupdater.actions import Action
from esupdater.backfill import BackfillSink
from esupdater.change import BACKFILL_VERSION
from esupdater.testing import make_change


class Recording:
    def __init__(self) -> None:
        self.sent: list[Action] = []

    async def execute(self, action: Action) -> dict[str, Any]:
        self.sent.append(action)
        return {"result": "created"}


async def test_index_and_create_become_version_0_external_writes_keeping_their_meta() -> None:
    inner = Recording()
    sink = BackfillSink(inner)
    await sink.execute({"_op_type": "index", "_index": "i", "_id": "1", "_source": {"a": 1},
                        "version": 99, "version_type": "external", "routing": "r"})
    await sink.execute({"_op_type": "create", "_index": "i", "_id": "2", "_source": {"a": 2}})
    assert inner.sent == [
        {"_op_type": "index", "_index": "i", "_id": "1", "_source": {"a": 1}, "routing": "r",
         "version": BACKFILL_VERSION, "version_type": "external"},
        {"_op_type": "index", "_index": "i", "_id": "2", "_source": {"a": 2},
         "version": BACKFILL_VERSION, "version_type": "external"},
    ]


async def test_an_upsert_writes_the_document_it_would_create_and_nothing_else() -> None:
    inner = Recording()
    sink = BackfillSink(inner)
    await sink.execute({"_op_type": "update", "_index": "i", "_id": "1", "doc": {"a": 1},
                        "doc_as_upsert": True, "retry_on_conflict": 3})
    await sink.execute({"_op_type": "update", "_index": "i", "_id": "2", "doc": {"a": 2},
                        "upsert": {"a": 0}})
    assert inner.sent == [
        {"_op_type": "index", "_index": "i", "_id": "1", "_source": {"a": 1},
         "version": BACKFILL_VERSION, "version_type": "external"},
        {"_op_type": "index", "_index": "i", "_id": "2", "_source": {"a": 0},
         "version": BACKFILL_VERSION, "version_type": "external"},
    ]


async def test_partial_updates_and_deletes_are_not_sent_and_answer_stale() -> None:
    inner = Recording()
    sink = BackfillSink(inner)
    update = await sink.execute({"_op_type": "update", "_index": "i", "_id": "1", "doc": {}})
    delete = await sink.execute({"_op_type": "delete", "_index": "i", "_id": "1"})
    assert inner.sent == []
    assert (update["result"], delete["result"], sink.skipped) == ("stale", "stale", 2)


def test_a_backfilled_change_has_version_0_and_every_streamed_one_is_higher() -> None:
    backfilled = make_change("shop", "users", "INSERT", {"id": 1})
    backfilled.source = "table"
    first = make_change("shop", "users", "INSERT", {"id": 1}, offset=0, row_index=0)
    assert backfilled.is_backfill
    assert backfilled.version == BACKFILL_VERSION == 0
    assert first.version >= 1
