"""`esupdater redrive`: feed dead-lettered records through the handlers again, after a fix.

It reads the dead-letter topic up to where it ended when redrive started (so what fails
again and is dead-lettered anew is not retried in a loop), re-applies each record: only
the failed row and handler when the headers say so, the whole record otherwise, and
commits its own group's offsets (`<group_id>-redrive`) only past records applied or
dead-lettered again.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from esupdater.change import Position
from esupdater.clients import make_consumer, topic_partitions
from esupdater.components import Components, close_bounded, components, start_retrying
from esupdater.deadletter import (
    H_ATTEMPTS,
    H_HANDLER,
    H_OFFSET,
    H_PARTITION,
    H_ROW,
    H_TOPIC,
    Failure,
)
from esupdater.decoding import DecodeError, Decoder
from esupdater.errors import ConfigError
from esupdater.handling import HandlerRunner, error_class
from esupdater.routing import Registry
from esupdater.settings import Settings

log = logging.getLogger(__name__)


#: The `esupdater.error_class` header of a record dead-lettered anew because no handler ran.
NO_HANDLER_CLASS = "esupdater.redrive.NoHandler"


@dataclass
class RedriveReport:
    """What became of each record: nothing is counted as applied that did not run.

    `stale`: the handlers ran, and every write they made was versioned and refused because
    the document already holds a newer change (correct, and nothing lost). `no_handler`:
    no handler matches the row now (renamed or removed), so nothing ran; the record is
    dead-lettered anew for a later redrive. Each list holds "where (from where)" lines.
    """

    records: int = 0
    applied: int = 0
    failed_again: int = 0
    failures: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    no_handler: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Everything ran and nothing failed (stale records are fine: the index is newer)."""
        return not self.failed_again and not self.no_handler

    def lines(self) -> list[str]:
        """The summary `esupdater redrive` prints."""
        out = [f"redrive: {self.records} record(s): {self.applied} applied, "
               f"{len(self.stale)} stale, {len(self.no_handler)} with no handler now, "
               f"{self.failed_again} failed again"]
        out += [f"  stale: {where}: not applied, the document holds a newer change"
                for where in self.stale]
        out += [f"  no handler now: {where}: nothing ran; dead-lettered anew"
                for where in self.no_handler]
        out += [f"  failed again: {where} (dead-lettered anew)" for where in self.failures]
        return out


@dataclass(frozen=True)
class _Outcome:
    """How one record went: the handlers that ran, and where it came from."""

    ran: int
    source: str


def _headers(record: Any) -> dict[str, str]:
    return {name: value.decode() for name, value in (record.headers or ())}


def _source_position(headers: dict[str, str], record: Any) -> Position:
    try:
        return Position(headers[H_TOPIC], int(headers[H_PARTITION]), int(headers[H_OFFSET]))
    except (KeyError, ValueError):  # not written by esupdater: say where it is now
        return Position(record.topic, record.partition, record.offset)


#: Seconds redrive, a one-shot command, waits for Kafka before it gives up (exit 1).
KAFKA_WAIT = 10.0


async def redrive(settings: Settings, registry: Registry, limit: int | None) -> RedriveReport:
    topic = settings.dead_letter.topic
    if not topic:
        raise ConfigError("redrive needs [dead_letter] topic (ESUPDATER_DEAD_LETTER__TOPIC)")
    report = RedriveReport()
    async with components(settings, dead_letters=True, give_up_after=KAFKA_WAIT) as parts, \
            AsyncExitStack() as stack:
        consumer = make_consumer(settings.kafka, group_id=f"{settings.kafka.group_id}-redrive")
        stack.push_async_callback(close_bounded, consumer.stop, "Kafka consumer")
        await start_retrying(consumer.start, "Kafka consumer", parts.backoff,
                             bootstrap=settings.kafka.bootstrap_servers,
                             give_up_after=KAFKA_WAIT)
        partitions = (await topic_partitions(settings.kafka, [topic])).get(topic)
        if partitions is None:
            raise ConfigError(f"dead-letter topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await _consume(consumer, ends, parts, registry, report, limit)
    return report


async def _consume(
    consumer: AIOKafkaConsumer,
    ends: dict[TopicPartition, int],
    parts: Components,
    registry: Registry,
    report: RedriveReport,
    limit: int | None,
) -> None:
    runner, stats = parts.runner(), parts.stats
    remaining = {tp for tp, end in ends.items() if await consumer.position(tp) < end}
    while remaining and (limit is None or report.records < limit):
        batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=100)
        for tp, records in batch.items():
            for record in records:
                if record.offset >= ends[tp] or (limit is not None and report.records >= limit):
                    remaining.discard(tp)
                    break
                before = stats.dead_lettered
                applied, stale = stats.writes_applied, stats.stale_writes
                outcome = await _apply(record, runner, registry, parts.decoder)
                report.records += 1
                where = f"{tp.topic}/{tp.partition}@{record.offset}"
                if stats.dead_lettered > before:
                    if outcome.ran:
                        report.failed_again += 1
                        report.failures.append(where)
                    else:
                        report.no_handler.append(f"{where} ({outcome.source})")
                elif stats.stale_writes > stale and stats.writes_applied == applied:
                    report.stale.append(f"{where} ({outcome.source})")
                else:
                    report.applied += 1
                await consumer.commit({tp: record.offset + 1})  # Kafka commits the next one
            if await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)


async def _apply(
    record: Any, runner: HandlerRunner, registry: Registry, decoder: Decoder
) -> _Outcome:
    """Re-run the record's failed row and handler (or the whole record); when no handler
    matches it any more, dead-letter it anew rather than count it as applied."""
    headers = _headers(record)
    position = _source_position(headers, record)
    attempts = int(headers.get(H_ATTEMPTS) or 0)
    row = headers.get(H_ROW) or ""
    handler = headers.get(H_HANDLER) or ""
    source = f"from {position}" + (f" row {row}" if row else "") + (
        f", handler {handler}" if handler else "")
    try:
        changes = decoder.decode(record.value, position)
    except DecodeError as exc:
        failure = Failure(position, exc.reason, error_class(exc), attempts=attempts + 1)
        await runner.set_aside.put(record.value, failure)
        return _Outcome(1, source)  # decoding is what ran, and failed again
    ran = 0
    for change in changes:
        if row and str(change.row_index) != row:
            continue
        routes = registry.handlers_for(change.database, change.table, change.type)
        if handler:
            routes = tuple(r for r in routes if r.name == handler)
        ran += len(routes)
        await runner.run(change, routes, record.value)
    if not ran:
        wanted = handler or "any handler"
        failure = Failure(
            position,
            f"no handler matches now ({wanted} for row {row or 'any'}); nothing ran: restore "
            "the handler and redrive again",
            NO_HANDLER_CLASS, handler=handler, row_index=int(row) if row.isdigit() else None,
            attempts=attempts,
        )
        log.warning("redrive: %s: %s", source, failure.reason)
        await runner.set_aside.put(record.value, failure)
    return _Outcome(ran, source)
