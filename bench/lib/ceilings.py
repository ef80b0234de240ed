"""The two ceilings esupdater cannot beat: reading the topic, and bulk-writing the documents.

A: a bare aiokafka consumer (esupdater's fetch settings, no group, no decoding) reads the
   whole topic with getmany.
B: the same documents as ready-made index/delete actions through
   `elasticsearch.helpers.async_streaming_bulk`, with esupdater's default chunking, as
   `max_requests_in_flight` concurrent streams split by (index, id) like the bulk writer's lanes.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass
from typing import Any

from aiokafka.structs import TopicPartition
from elasticsearch.helpers import async_streaming_bulk

from bench.lib.cpu import cpu_seconds
from bench.lib.dataset import messages, statements
from esupdater.canal import CanalDecoder
from esupdater.change import Position
from esupdater.clients import make_consumer, make_elasticsearch
from esupdater.settings import BulkSettings, ElasticsearchSettings, KafkaSettings
from tools.local_stack import ELASTICSEARCH, KAFKA


@dataclass
class Rate:
    rows: int
    seconds: float
    records: int = 0
    errors: int = 0
    #: B only: this process's and Elasticsearch's CPU over the run, and the bulk requests
    #: (own: as the helper chunks them; Elasticsearch's: from the index's stats).
    cpu_seconds: float | None = None
    es_cpu_seconds: float | None = None
    own_bulk_requests: int | None = None
    bulk_requests: int | None = None
    bulk_actions: int | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def per_1k_rows(self, seconds: float | None) -> float | None:
        return None if seconds is None or not self.rows else 1000 * seconds / self.rows


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


async def bulk_rate(
    actions: list[dict[str, Any]], *, orjson: bool = True, es_pid: int | None = None
) -> Rate:
    """Ceiling B: the actions through `max_requests_in_flight` concurrent streaming bulks;
    this process's CPU (nothing else runs in it meanwhile) and Elasticsearch's over the run."""
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

    # Chunks of chunk_size actions: that many users' documents stay far below max_chunk_bytes.
    requests = sum(math.ceil(len(lane) / limits.chunk_size) for lane in lanes)

    def es_cpu() -> float | None:
        return cpu_seconds(es_pid) if es_pid else None

    try:
        cpu_before, es_before = cpu_seconds(os.getpid()), es_cpu()
        started = time.monotonic()
        errors = await asyncio.gather(*(stream(lane) for lane in lanes))
        took = time.monotonic() - started
        cpu_after, es_after = cpu_seconds(os.getpid()), es_cpu()
        return Rate(
            len(actions), took, errors=sum(errors), own_bulk_requests=requests,
            cpu_seconds=_delta(cpu_before, cpu_after), es_cpu_seconds=_delta(es_before, es_after),
        )
    finally:
        await es.close()


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before
