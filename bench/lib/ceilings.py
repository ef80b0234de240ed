"""The two ceilings esupdater cannot beat: reading the topic, and bulk-writing the documents.

A: a bare aiokafka consumer (esupdater's fetch settings, no group, no decoding) reads the
   whole topic with getmany.
B: the same documents as ready-made index/delete actions through
   `elasticsearch.helpers.async_streaming_bulk`, with esupdater's default chunking, as
   `max_requests_in_flight` concurrent streams split by (index, id) like the bulk writer's lanes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from aiokafka.structs import TopicPartition
from elasticsearch.helpers import async_streaming_bulk

from bench.lib.dataset import messages, statements
from esupdater.canal import CanalDecoder
from esupdater.change import Position
from esupdater.clients import make_consumer, make_elasticsearch
from esupdater.settings import BulkSettings, ElasticsearchSettings, KafkaSettings
from tools.local_stack import ELASTICSEARCH, KAFKA


@dataclass(frozen=True)
class Rate:
    rows: int
    seconds: float
    records: int = 0
    errors: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


async def consume_rate(topic: str, partitions: int, rows: int) -> Rate:
    """Ceiling A: read every record of `topic` once; rows/s counts the rows they carry."""
    consumer = make_consumer(KafkaSettings(bootstrap_servers=KAFKA), group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = sum(ends.values())
        records = 0
        started = time.monotonic()
        while records < remaining:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records += len(part)
        return Rate(rows, time.monotonic() - started, records)
    finally:
        await consumer.stop()


def build_actions(index: str, rows: int, partitions: int) -> list[dict[str, Any]]:
    """The dataset's row changes as the actions the benchmark handler would queue."""
    actions: list[dict[str, Any]] = []
    source = messages(statements(rows, partitions=partitions), rows_per_message=10)
    decoder = CanalDecoder()
    for offset, (partition, value, _) in enumerate(source):
        for change in decoder.decode(value, Position("bench", partition, offset)):
            if change.is_delete:
                actions.append({"_op_type": "delete", "_index": index, "_id": change.pk})
            else:
                actions.append({"_op_type": "index", "_index": index, "_id": change.pk,
                                "_source": change.row})
    return actions


async def bulk_rate(actions: list[dict[str, Any]], *, orjson: bool = True) -> Rate:
    """Ceiling B: the actions through `max_requests_in_flight` concurrent streaming bulks."""
    limits = BulkSettings()
    lanes: list[list[dict[str, Any]]] = [[] for _ in range(limits.max_requests_in_flight)]
    for action in actions:
        lanes[hash((action["_index"], action["_id"])) % len(lanes)].append(action)
    es = make_elasticsearch(ElasticsearchSettings(hosts=[ELASTICSEARCH]), orjson=orjson)

    async def stream(lane: list[dict[str, Any]]) -> int:
        errors = 0
        async for ok, info in async_streaming_bulk(
            es, lane, chunk_size=limits.chunk_size, max_chunk_bytes=limits.max_chunk_bytes,
            raise_on_error=False, raise_on_exception=False, max_retries=0,
        ):
            if not ok and next(iter(info.values())).get("status") != 404:
                errors += 1
        return errors

    try:
        started = time.monotonic()
        errors = await asyncio.gather(*(stream(lane) for lane in lanes))
        return Rate(len(actions), time.monotonic() - started, errors=sum(errors))
    finally:
        await es.close()
