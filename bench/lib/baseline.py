"""Baseline C: the seed's shape in Python, sequential and async.

The seed (PHP) has a consumer process handing each message to a worker process that calls the
handler, which sends one Elasticsearch request per change, and commits each message. Here the
same work runs in one event loop without process start-up costs, which is generous to it:
per message, decode, call the handler (es.index / es.delete), commit that message's offset.
"""

from __future__ import annotations

import time

from aiokafka.structs import OffsetAndMetadata, TopicPartition
from elasticsearch import AsyncElasticsearch

from bench.lib.ceilings import Rate
from esupdater.canal import CanalDecoder
from esupdater.change import Change, Position
from esupdater.clients import make_consumer, make_elasticsearch
from esupdater.settings import ElasticsearchSettings, KafkaSettings
from tools.local_stack import ELASTICSEARCH, KAFKA


async def _handle(change: Change, es: AsyncElasticsearch, index: str) -> None:
    if change.is_delete:
        await es.options(ignore_status=404).delete(index=index, id=change.pk)
    else:
        await es.index(index=index, id=change.pk, document=change.row)


async def seed_rate(
    topic: str, group: str, index: str, *, max_rows: int, max_seconds: float
) -> Rate:
    """Consume `topic` the seed's way until `max_rows` rows or `max_seconds` have passed."""
    kafka = KafkaSettings(bootstrap_servers=KAFKA, topics=[topic], group_id=group)
    consumer = make_consumer(kafka)
    es = make_elasticsearch(ElasticsearchSettings(hosts=[ELASTICSEARCH]))
    await consumer.start()
    consumer.subscribe([topic])
    rows = records = 0
    decoder = CanalDecoder()
    try:
        record = await consumer.getone()  # the group join is not part of the rate
        started = time.monotonic()
        while True:
            changes = decoder.decode(
                record.value, Position(record.topic, record.partition, record.offset)
            )
            for change in changes:
                await _handle(change, es, index)
            tp = TopicPartition(record.topic, record.partition)
            await consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "")})
            rows += len(changes)
            records += 1
            elapsed = time.monotonic() - started
            if rows >= max_rows or elapsed >= max_seconds:
                return Rate(rows, elapsed, records)
            record = await consumer.getone()
    finally:
        await consumer.stop()
        await es.close()
