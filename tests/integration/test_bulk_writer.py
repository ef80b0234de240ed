"""The shared bulk writer against real Elasticsearch: acknowledgements, refusals, batching."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, NotFoundError

from esupdater.backoff import Backoff
from esupdater.bulk import BulkLimits, BulkWriter
from esupdater.clients import make_elasticsearch
from esupdater.context import Context
from esupdater.errors import BulkItemError
from esupdater.settings import ElasticsearchSettings
from esupdater.testing import make_change
from tests.integration.es_edge import es_edge, item_errors
from tests.integration.service_harness import TcpProxy
from tests.versioning_scenario import run_versioning_scenario
from tools.local_stack import ELASTICSEARCH


@pytest.fixture
async def writer() -> AsyncIterator[BulkWriter]:
    es = make_elasticsearch(ElasticsearchSettings(hosts=[ELASTICSEARCH]))
    bulk = BulkWriter(es, BulkLimits(chunk_size=100, max_in_flight=2), Backoff(0.05, 0.5))
    await bulk.start()
    try:
        yield bulk
    finally:
        await bulk.close()
        await es.close()


async def test_each_action_returns_once_elasticsearch_acknowledged_it(
    writer: BulkWriter, es: AsyncElasticsearch, unique_name: str
) -> None:
    results = await asyncio.gather(
        *(
            writer.execute({"_index": unique_name, "_id": str(i), "_source": {"n": i}})
            for i in range(1000)
        )
    )
    assert [r["result"] for r in results] == ["created"] * 1000
    await es.indices.refresh(index=unique_name)
    assert (await es.count(index=unique_name))["count"] == 1000
    assert writer.stats.bulk_requests < 1000 / 10  # batched: far fewer requests than actions
    await es.indices.delete(index=unique_name)


async def test_writes_to_one_document_are_applied_in_submission_order(
    writer: BulkWriter, es: AsyncElasticsearch, unique_name: str
) -> None:
    await asyncio.gather(
        *(
            writer.execute({"_index": unique_name, "_id": "same", "_source": {"v": v}})
            for v in range(300)
        )
    )
    assert (await es.get(index=unique_name, id="same"))["_source"] == {"v": 299}
    await es.indices.delete(index=unique_name)


async def test_a_refused_document_raises_naming_index_id_and_reason(
    writer: BulkWriter, es: AsyncElasticsearch, unique_name: str
) -> None:
    await es.indices.create(index=unique_name, mappings={"properties": {"n": {"type": "long"}}})
    good = writer.execute({"_index": unique_name, "_id": "good", "_source": {"n": 1}})
    bad = writer.execute({"_index": unique_name, "_id": "bad", "_source": {"n": "many"}})
    outcomes = await asyncio.gather(good, bad, return_exceptions=True)
    assert outcomes[0]["result"] == "created"  # type: ignore[index]
    error = outcomes[1]
    assert isinstance(error, BulkItemError)
    assert (error.index, error.doc_id, error.status) == (unique_name, "bad", 400)
    assert "document_parsing_exception" in str(error)
    await es.indices.delete(index=unique_name)


async def test_deleting_a_missing_document_is_not_an_error(
    writer: BulkWriter, es: AsyncElasticsearch, unique_name: str
) -> None:
    await es.indices.create(index=unique_name)
    result = await writer.execute({"_op_type": "delete", "_index": unique_name, "_id": "nope"})
    assert (result["status"], result["result"]) == (404, "not_found")
    await es.indices.delete(index=unique_name)


async def test_deleting_from_a_missing_index_is_not_an_error(
    writer: BulkWriter, unique_name: str
) -> None:
    result = await writer.execute({"_op_type": "delete", "_index": unique_name, "_id": "nope"})
    assert result["status"] == 404


async def test_updating_a_missing_document_without_upsert_is_refused(
    writer: BulkWriter, unique_name: str
) -> None:
    with pytest.raises(BulkItemError, match="document_missing_exception"):
        await writer.execute(
            {"_op_type": "update", "_index": unique_name, "_id": "nope", "doc": {"a": 1}}
        )


async def test_a_document_that_is_not_json_is_refused_and_spares_its_batch(
    writer: BulkWriter, es: AsyncElasticsearch, unique_name: str
) -> None:
    actions = [{"_index": unique_name, "_id": str(i), "_source": {"n": i}} for i in range(20)]
    actions[7]["_source"] = {"n": {1, 2}}  # a set: no JSON for it
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(writer.execute(a) for a in actions), return_exceptions=True), 20
    )
    assert isinstance(outcomes[7], BulkItemError)
    assert [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)] == [7]
    await es.indices.refresh(index=unique_name)
    assert (await es.count(index=unique_name))["count"] == 19
    await es.indices.delete(index=unique_name)


async def test_a_write_cancelled_while_queued_is_never_sent(
    es: AsyncElasticsearch, es_proxy: TcpProxy, unique_name: str
) -> None:
    """A revoked partition's rows are cancelled: what they had queued must not land later
    (after the new owner's writes). A request already on the wire cannot be recalled."""
    client = make_elasticsearch(ElasticsearchSettings(hosts=[es_proxy.url], request_timeout=60))
    bulk = BulkWriter(client, BulkLimits(max_in_flight=1), Backoff(0.05, 0.5))
    await bulk.start()
    try:
        await bulk.execute({"_index": unique_name, "_id": "warm", "_source": {"v": 0}})
        es_proxy.stall()
        on_the_wire = asyncio.create_task(
            bulk.execute({"_index": unique_name, "_id": "doc", "_source": {"v": 1}})
        )
        await asyncio.sleep(0.5)  # sent, held by the stalled proxy
        queued = asyncio.create_task(
            bulk.execute({"_index": unique_name, "_id": "doc", "_source": {"v": 2}})
        )
        await asyncio.sleep(0.2)
        queued.cancel()
        es_proxy.flow()
        assert (await asyncio.wait_for(on_the_wire, 30))["result"] == "created"
        await bulk.execute({"_index": unique_name, "_id": "after", "_source": {"v": 3}})
        assert (await es.get(index=unique_name, id="doc"))["_source"] == {"v": 1}
    finally:
        await bulk.close()
        await client.close()
        await es.indices.delete(index=unique_name, ignore_unavailable=True)


async def test_versioned_writes_older_than_the_document_are_not_applied(
    writer: BulkWriter, es: AsyncElasticsearch, unique_name: str
) -> None:
    async def get(doc_id: str) -> dict[str, Any] | None:
        try:
            found = await es.get(index=unique_name, id=doc_id)
        except NotFoundError:
            return None
        source: dict[str, Any] = found["_source"]
        return source

    await run_versioning_scenario(writer, unique_name, get)

    assert writer.stats.stale_writes == 4  # each refusal counted, none raised
    await es.indices.delete(index=unique_name)


# -- failure kinds against the real server (errors.py; unit tests in test_bulk_classification) --


async def test_a_document_nested_too_deep_to_serialise_is_refused_at_once(
    writer: BulkWriter, unique_name: str
) -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(1000):
        inner["a"] = {}
        inner = inner["a"]
    async with asyncio.timeout(20):
        with pytest.raises(BulkItemError, match="nested too deep"):
            await writer.execute({"_index": unique_name, "_id": "deep", "_source": deep})
    assert writer.stats.es_retries == 0


async def test_writes_to_a_write_blocked_index_are_held_until_the_block_is_lifted(
    writer: BulkWriter, es: AsyncElasticsearch, unique_name: str
) -> None:
    await es.indices.create(index=unique_name)
    await es.indices.put_settings(index=unique_name, settings={"index.blocks.write": True})
    try:
        held = asyncio.create_task(
            writer.execute({"_index": unique_name, "_id": "1", "_source": {"v": 1}})
        )
        await asyncio.sleep(1.5)  # several retries at 0.05-0.5 s
        assert not held.done()  # not refused: a block is not the document's fault
        assert writer.stats.es_held >= 2
    finally:
        await es.indices.put_settings(index=unique_name, settings={"index.blocks.write": None})
    assert (await asyncio.wait_for(held, 20))["result"] == "created"
    await es.indices.delete(index=unique_name)


async def test_writes_to_one_document_keep_their_order_when_elasticsearch_answers_429(
    es: AsyncElasticsearch, es_url: str, unique_name: str
) -> None:
    """Both writes of a ctx.bulk get 429 on the first request; each retries with its own
    jittered backoff, and the second must still be the one that stays. The 429 comes from
    an edge relay (tests/integration/es_edge.py): the local server gives none on demand."""
    async with es_edge(es_url) as edge:
        edge.answer = lambda n, actions: (
            item_errors(actions, 429, "es_rejected_execution_exception") if n == 1 else None
        )
        client = make_elasticsearch(ElasticsearchSettings(hosts=[edge.url]))
        bulk = BulkWriter(client, BulkLimits(max_in_flight=2), Backoff(0.05, 0.5))
        await bulk.start()
        try:
            for trial in range(10):
                edge.bulk_requests = 0  # the first request of each trial gets the 429s
                ctx = Context(bulk, None, make_change("shop", "users", "INSERT", {"id": trial}))
                await ctx.bulk([
                    {"_index": unique_name, "_id": str(trial), "_source": {"v": 1}},
                    {"_index": unique_name, "_id": str(trial), "_source": {"v": 2}},
                ])
            assert edge.answered == 10
            for trial in range(10):
                assert (await es.get(index=unique_name, id=str(trial)))["_source"] == {"v": 2}
        finally:
            await bulk.close()
            await client.close()
            await es.indices.delete(index=unique_name, ignore_unavailable=True)


async def test_an_awaited_write_gets_its_whole_item_back(
    writer: BulkWriter, unique_name: str
) -> None:
    """`execute`'s caller (a handler's `ctx`) reads the item: every field of it but the shard
    counts, as Elasticsearch answered."""
    item = await writer.execute({"_index": unique_name, "_id": "1", "_source": {"v": 1}})
    assert set(item) == {"_index", "_id", "_version", "result", "status", "_seq_no",
                         "_primary_term"}
    assert (item["_index"], item["_id"], item["result"], item["_version"], item["status"]) == (
        unique_name, "1", "created", 1, 201)


class _Unread(asyncio.Future[dict[str, Any]]):
    """The answer of a write whose caller never reads its item (a mapped row's)."""


async def test_writes_nobody_reads_the_item_of_come_back_with_status_and_error_only(
    writer: BulkWriter, es: AsyncElasticsearch, unique_name: str
) -> None:
    """A request of such writes only asks Elasticsearch for what the writer reads; a refused
    document still comes back with Elasticsearch's reason."""
    await es.indices.create(index=unique_name, mappings={"properties": {"n": {"type": "long"}}})
    loop = asyncio.get_running_loop()
    good, bad = _Unread(loop=loop), _Unread(loop=loop)
    tickets = [
        writer.queue_nowait({"_index": unique_name, "_id": "1", "_source": {"n": 1}}, good),
        writer.queue_nowait({"_index": unique_name, "_id": "2", "_source": {"n": "x"}}, bad),
    ]
    try:
        assert await asyncio.wait_for(good, 10) == {"status": 201}
        with pytest.raises(BulkItemError) as refused:
            await asyncio.wait_for(bad, 10)
        assert refused.value.status == 400
        assert "parsing" in str(refused.value)  # document_parsing_exception: ES's own words
    finally:
        for ticket, key in tickets:
            writer.done_with(ticket, key)
    found = await es.get(index=unique_name, id="1")
    assert found["_source"] == {"n": 1}
