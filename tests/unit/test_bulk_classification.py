"""The bulk writer's item resolution with a scripted client: what is retried, held, refused.

Each failure kind of the README's "When things go wrong" table, one test at least; the same
kinds against the real server are in tests/integration/test_bulk_writer.py and
tests/integration/test_held_writes.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
from elasticsearch import AuthenticationException, BadRequestError

from esupdater.backoff import Backoff
from esupdater.bulk import BulkLimits, BulkWriter
from esupdater.context import Context
from esupdater.errors import BulkItemError
from esupdater.stats import Stats
from esupdater.testing import make_change
from tests.unit.fake_elasticsearch import FakeElasticsearch, ItemScript, api_error

#: Retries in milliseconds, so a test of many retries takes a fraction of a second.
QUICK = Backoff(0.001, 0.01)
#: No test here should take more than a moment; past this it is retrying forever.
DEADLINE = 5.0


@asynccontextmanager
async def running(
    es: FakeElasticsearch, *, lanes: int = 1, stats: Stats | None = None
) -> AsyncIterator[BulkWriter]:
    writer = BulkWriter(cast(Any, es), BulkLimits(max_in_flight=lanes), QUICK, stats=stats)
    await writer.start()
    try:
        async with asyncio.timeout(DEADLINE):
            yield writer
    finally:
        await writer.close()


def failing_calls(calls: int, status: int, error_type: str) -> ItemScript:
    """Every item of the first `calls` requests fails with `status` / `error_type`."""

    def script(n: int, place: int, op: str, index: str, doc_id: str) -> tuple[int, str] | None:
        return (status, error_type) if n <= calls else None

    return script


def doc(doc_id: str, **source: Any) -> dict[str, Any]:
    return {"_index": "idx", "_id": doc_id, "_source": source}


# -- held: not the document's fault; retried loudly until Elasticsearch accepts ------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (403, "cluster_block_exception"),  # index.blocks.write during maintenance
        (404, "index_not_found_exception"),  # auto-creation off, alias missing
        (400, "index_closed_exception"),
        (401, "security_exception"),
        (400, "some_exception_this_version_does_not_know"),
    ],
)
async def test_an_item_refused_for_a_reason_outside_the_document_is_held_until_accepted(
    status: int, error_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    es = FakeElasticsearch(fail_item=failing_calls(3, status, error_type))
    async with running(es) as writer:
        result = await writer.execute(doc("1", v=1))
    assert result["result"] == "created"
    assert es.docs[("idx", "1")] == {"v": 1}
    assert len(es.calls) == 4
    held = [r for r in caplog.records if r.levelno == logging.ERROR and error_type in r.message]
    assert len(held) == 3, caplog.text  # loud from the first refusal on


@pytest.mark.parametrize(
    "error",
    [
        api_error(AuthenticationException, 401, "security_exception", "unable to authenticate"),
        api_error(BadRequestError, 400, "parse_exception", "request body is required"),
    ],
)
async def test_a_whole_request_elasticsearch_refuses_holds_every_row_of_it(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    es = FakeElasticsearch(fail_request=lambda n: error if n <= 2 else None)
    async with running(es) as writer:
        results = await asyncio.gather(writer.execute(doc("1", v=1)), writer.execute(doc("2")))
    assert [r["result"] for r in results] == ["created", "created"]
    assert any(r.levelno == logging.ERROR for r in caplog.records)


async def test_a_held_document_does_not_hold_writes_to_other_documents() -> None:
    blocked = True

    def script(n: int, place: int, op: str, index: str, doc_id: str) -> tuple[int, str] | None:
        return (403, "cluster_block_exception") if blocked and index == "blocked" else None

    es = FakeElasticsearch(fail_item=script)
    async with running(es) as writer:
        held = asyncio.create_task(writer.execute({"_index": "blocked", "_id": "1", "_source": {}}))
        for i in range(5):
            await writer.execute(doc(str(i)))
        assert not held.done()
        blocked = False
        assert (await held)["result"] == "created"


# -- refused: the document itself; set aside at once --------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "document_parsing_exception"),
        (400, "mapper_parsing_exception"),
        (400, "strict_dynamic_mapping_exception"),
        (400, "illegal_argument_exception"),
        (404, "document_missing_exception"),
    ],
)
async def test_a_document_elasticsearch_cannot_take_is_refused_at_once(
    status: int, error_type: str
) -> None:
    es = FakeElasticsearch(fail_item=failing_calls(1, status, error_type))
    async with running(es) as writer:
        with pytest.raises(BulkItemError, match=error_type) as refused:
            await writer.execute(doc("1", v=1))
    assert (refused.value.index, refused.value.doc_id, refused.value.status) == ("idx", "1", status)
    assert len(es.calls) == 1


async def test_a_document_nested_too_deep_to_serialise_is_refused_at_once_sparing_its_batch(
) -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(1000):
        inner["a"] = {}
        inner = inner["a"]
    es = FakeElasticsearch()
    async with running(es) as writer:
        outcomes = await asyncio.gather(
            writer.execute(doc("ok", v=1)), writer.execute(doc("deep", **deep)),
            return_exceptions=True,
        )
    assert isinstance(outcomes[1], BulkItemError), outcomes[1]
    assert "nested too deep" in str(outcomes[1])
    assert outcomes[0] == {"_index": "idx", "_id": "ok", "status": 201, "result": "created"}


async def test_deleting_a_missing_document_is_not_an_error() -> None:
    async with running(FakeElasticsearch()) as writer:
        result = await writer.execute({"_op_type": "delete", "_index": "idx", "_id": "x"})
    assert result["result"] == "not_found"


# -- transient: Elasticsearch busy; retried, and in order ---------------------------------------


async def test_an_item_that_gets_429_is_retried_until_accepted() -> None:
    es = FakeElasticsearch(fail_item=failing_calls(3, 429, "es_rejected_execution_exception"))
    async with running(es) as writer:
        assert (await writer.execute(doc("1", v=1)))["result"] == "created"
    assert len(es.calls) == 4


async def test_writes_to_one_document_keep_their_order_when_the_first_attempt_gets_429() -> None:
    finals = []
    for _ in range(40):
        es = FakeElasticsearch(fail_item=failing_calls(1, 429, "es_rejected_execution_exception"))
        async with running(es, lanes=2) as writer:
            ctx = Context(writer, None, make_change("shop", "users", "INSERT", {"id": 1}))
            await ctx.bulk([doc("1", v=1), doc("1", v=2)])
        finals.append(es.docs[("idx", "1")]["v"])
    assert finals == [2] * 40


async def test_a_later_write_applied_while_an_earlier_one_failed_is_applied_again_after_it(
) -> None:
    """Elasticsearch took v2 but answered 503 for v1 of the same request: retrying v1 alone
    would leave v1 in the index. v2 must land after v1 does."""

    def first_item_of_first_call(
        n: int, place: int, op: str, index: str, doc_id: str
    ) -> tuple[int, str] | None:
        return (503, "unavailable_shards_exception") if (n, place) == (1, 0) else None

    es = FakeElasticsearch(fail_item=first_item_of_first_call)
    async with running(es) as writer:
        results = await asyncio.gather(writer.execute(doc("1", v=1)),
                                       writer.execute(doc("1", v=2)))
    assert es.docs[("idx", "1")] == {"v": 2}
    assert all(r["status"] in (200, 201) for r in results)


async def test_a_later_write_waits_for_an_earlier_retrying_write_of_its_document() -> None:
    """v2 queued while v1 backs off is not sent before v1 is accepted."""
    es = FakeElasticsearch(fail_item=failing_calls(2, 429, "es_rejected_execution_exception"))
    async with running(es) as writer:
        first = asyncio.create_task(writer.execute(doc("1", v=1)))
        await es.wait_calls(1)
        await writer.execute(doc("1", v=2))
        await first
    sent = [(body or {}).get("v") for call in es.calls for (_, _, _, body) in call.actions]
    last_v1 = max(i for i, v in enumerate(sent) if v == 1)
    assert min(i for i, v in enumerate(sent) if v == 2) > last_v1, sent
    assert es.docs[("idx", "1")] == {"v": 2}


async def test_a_write_cancelled_while_it_retries_lets_the_next_write_of_its_document_go(
) -> None:
    es = FakeElasticsearch(fail_item=failing_calls(1_000_000, 503, "unavailable_shards_exception"))
    async with running(es) as writer:
        stuck = asyncio.create_task(writer.execute(doc("1", v=1)))
        await es.wait_calls(2)
        stuck.cancel()
        es.fail_item = lambda *_: None
        assert (await writer.execute(doc("1", v=2)))["result"] == "created"
    assert es.docs[("idx", "1")] == {"v": 2}
