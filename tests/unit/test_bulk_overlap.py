"""Lanes overlap only under load: a partial request waits while another lane's is on the wire.

Against the real server, two concurrent partial requests into one shard made Elasticsearch
stop indexing for about half a second now and then (bench/lib/latency.py measures it); one
request at a time did not. A backlog still needs both lanes at once for its rate.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from esupdater.backoff import Backoff
from esupdater.bulk import BulkLimits, BulkWriter
from tests.unit.fake_elasticsearch import FakeElasticsearch

CHUNK = 10  # a lane's share of a full request: CHUNK / 2 actions


def _docs_for_each_lane(writer: BulkWriter, lanes: int, per_lane: int) -> list[list[str]]:
    """Document ids that land in each lane (lanes are chosen by (index, id))."""
    found: list[list[str]] = [[] for _ in range(lanes)]
    n = 0
    while min(len(ids) for ids in found) < per_lane:
        doc_id = f"d{n}"
        found[hash(("idx", doc_id)) % lanes].append(doc_id)
        n += 1
    return [ids[:per_lane] for ids in found]


def _index(doc_id: str) -> dict[str, Any]:
    return {"_index": "idx", "_id": doc_id, "_source": {"v": 1}}


async def _started(es: FakeElasticsearch, flush_interval: float = 1.0) -> BulkWriter:
    limits = BulkLimits(chunk_size=CHUNK, max_in_flight=2, flush_interval=flush_interval)
    writer = BulkWriter(cast(Any, es), limits, Backoff(0.001, 0.01))
    await writer.start()
    return writer


async def test_a_partial_request_waits_for_the_other_lanes_answer() -> None:
    es = FakeElasticsearch()
    es.answers = asyncio.Event()
    writer = await _started(es)
    try:
        first, second = _docs_for_each_lane(writer, 2, 2)
        a = asyncio.ensure_future(writer.execute(_index(first[0])))
        await es.wait_calls(1)  # the first lane's request is on the wire, unanswered
        b = [asyncio.ensure_future(writer.execute(_index(i))) for i in second]
        await asyncio.sleep(0.2)  # it would have gone at once, its lane being free
        assert len(es.calls) == 1

        es.answers.set()
        async with asyncio.timeout(2):
            await asyncio.gather(a, *b)
        assert [sorted(doc for _, _, doc, _ in call.actions) for call in es.calls] == [
            [first[0]], sorted(second)]
    finally:
        es.answers.set()
        await writer.close()


async def test_a_lane_holding_its_share_of_a_full_request_goes_alongside() -> None:
    es = FakeElasticsearch()
    es.answers = asyncio.Event()
    writer = await _started(es)
    try:
        first, second = _docs_for_each_lane(writer, 2, CHUNK // 2)
        a = asyncio.ensure_future(writer.execute(_index(first[0])))
        await es.wait_calls(1)
        b = [asyncio.ensure_future(writer.execute(_index(i))) for i in second]
        async with asyncio.timeout(2):
            await es.wait_calls(2)  # while the first is still unanswered
        assert not a.done()
        assert sorted(doc for _, _, doc, _ in es.calls[1].actions) == sorted(second)
        es.answers.set()
        async with asyncio.timeout(2):
            await asyncio.gather(a, *b)
    finally:
        es.answers.set()
        await writer.close()


async def test_a_slow_answer_holds_the_other_lanes_up_for_one_flush_interval_only() -> None:
    es = FakeElasticsearch()
    es.answers = asyncio.Event()
    writer = await _started(es, flush_interval=0.05)
    try:
        first, second = _docs_for_each_lane(writer, 2, 1)
        a = asyncio.ensure_future(writer.execute(_index(first[0])))
        await es.wait_calls(1)
        b = asyncio.ensure_future(writer.execute(_index(second[0])))
        async with asyncio.timeout(1):
            await es.wait_calls(2)  # the first one still unanswered
        assert not a.done()
        es.answers.set()
        async with asyncio.timeout(2):
            await asyncio.gather(a, b)
    finally:
        es.answers.set()
        await writer.close()


async def test_closing_sends_what_a_held_lane_waits_with() -> None:
    es = FakeElasticsearch()
    es.answers = asyncio.Event()
    writer = await _started(es)
    first, second = _docs_for_each_lane(writer, 2, 1)
    a = asyncio.ensure_future(writer.execute(_index(first[0])))
    await es.wait_calls(1)
    b = asyncio.ensure_future(writer.execute(_index(second[0])))
    await asyncio.sleep(0.1)
    closing = asyncio.ensure_future(writer.close())
    async with asyncio.timeout(2):
        await es.wait_calls(2)  # sent on close, the first request still unanswered
    es.answers.set()
    async with asyncio.timeout(2):
        await asyncio.gather(a, b, closing)
    assert es.docs.keys() == {("idx", first[0]), ("idx", second[0])}
