"""`esupdater redrive`: feed dead-lettered records through the handlers again, after a fix.

It reads the dead-letter topic up to where it ended when redrive started (so what fails
again and is dead-lettered anew is not retried in a loop), re-applies each record: only
the failed row and handler when the headers say so, the whole record otherwise, and
commits its own group's offsets (`<group_id>-redrive`) only past records applied or
dead-lettered again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from esupdater.backoff import Backoff
from esupdater.bulk import BulkLimits, BulkWriter
from esupdater.canal import CanalDecodeError, decode_record
from esupdater.change import Position
from esupdater.clients import make_consumer, make_elasticsearch, make_producer, topic_partitions
from esupdater.deadletter import (
    H_ATTEMPTS,
    H_HANDLER,
    H_OFFSET,
    H_PARTITION,
    H_ROW,
    H_TOPIC,
    DeadLetterTopic,
    Failure,
)
from esupdater.errors import ConfigError
from esupdater.handling import HandlerRunner, error_class
from esupdater.routing import Registry
from esupdater.settings import Settings
from esupdater.stats import Stats

log = logging.getLogger(__name__)


@dataclass
class RedriveReport:
    records: int = 0
    applied: int = 0
    failed_again: int = 0
    failures: list[str] = field(default_factory=list)


def _headers(record: Any) -> dict[str, str]:
    return {name: value.decode() for name, value in (record.headers or ())}


def _source_position(headers: dict[str, str], record: Any) -> Position:
    try:
        return Position(headers[H_TOPIC], int(headers[H_PARTITION]), int(headers[H_OFFSET]))
    except (KeyError, ValueError):  # not written by esupdater: say where it is now
        return Position(record.topic, record.partition, record.offset)


async def redrive(settings: Settings, registry: Registry, limit: int | None) -> RedriveReport:
    topic = settings.dead_letter.topic
    if not topic:
        raise ConfigError("redrive needs [dead_letter] topic (ESUPDATER_DEAD_LETTER__TOPIC)")
    report = RedriveReport()
    stats = Stats()
    backoff = Backoff.from_ms(settings.bulk.initial_backoff_ms, settings.bulk.max_backoff_ms)
    es = make_elasticsearch(settings.elasticsearch)
    writer = BulkWriter(es, BulkLimits(max_in_flight=1), backoff)
    producer = make_producer(settings.kafka)
    consumer = make_consumer(settings.kafka, group_id=f"{settings.kafka.group_id}-redrive")
    dead_letters = DeadLetterTopic(stats, producer, topic, backoff)
    runner = HandlerRunner(writer, es, stats, dead_letters,
                           max_attempts=settings.dead_letter.max_attempts, backoff=backoff)
    await writer.start()
    try:
        await producer.start()
        await consumer.start()
        partitions = (await topic_partitions(settings.kafka, [topic])).get(topic)
        if partitions is None:
            raise ConfigError(f"dead-letter topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await _consume(consumer, ends, runner, registry, stats, report, limit, settings)
    finally:
        await consumer.stop()
        await writer.close()
        await producer.stop()
        await es.close()
    return report


async def _consume(
    consumer: AIOKafkaConsumer,
    ends: dict[TopicPartition, int],
    runner: HandlerRunner,
    registry: Registry,
    stats: Stats,
    report: RedriveReport,
    limit: int | None,
    settings: Settings,
) -> None:
    remaining = {tp for tp, end in ends.items() if await consumer.position(tp) < end}
    while remaining and (limit is None or report.records < limit):
        batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=100)
        for tp, records in batch.items():
            for record in records:
                if record.offset >= ends[tp] or (limit is not None and report.records >= limit):
                    remaining.discard(tp)
                    break
                before = stats.dead_lettered
                await _apply(record, runner, registry, settings)
                report.records += 1
                if stats.dead_lettered > before:
                    report.failed_again += 1
                    report.failures.append(f"{tp.topic}/{tp.partition}@{record.offset}")
                else:
                    report.applied += 1
                await consumer.commit({tp: record.offset + 1})  # Kafka commits the next one
            if await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)


async def _apply(
    record: Any, runner: HandlerRunner, registry: Registry, settings: Settings
) -> None:
    headers = _headers(record)
    position = _source_position(headers, record)
    attempts = int(headers.get(H_ATTEMPTS) or 0)
    try:
        changes = decode_record(
            record.value, position, tinyint1_as_bool=settings.worker.tinyint1_as_bool
        )
    except CanalDecodeError as exc:
        failure = Failure(position, exc.reason, error_class(exc), attempts=attempts + 1)
        await runner.set_aside.put(record.value, failure)
        return
    row = headers.get(H_ROW) or ""
    handler = headers.get(H_HANDLER) or ""
    for change in changes:
        if row and str(change.row_index) != row:
            continue
        routes = registry.handlers_for(change.database, change.table, change.type)
        if handler:
            routes = tuple(r for r in routes if r.name == handler)
        await runner.run(change, routes, record.value)
