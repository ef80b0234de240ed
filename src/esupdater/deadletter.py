"""Setting bad input aside: never dropped silently, always counted and logged once.

With a `[dead_letter] topic` the original bytes go there with headers saying why and where
from; `esupdater redrive` feeds them through the handlers again after a fix. Without one,
`on_failure` decides: `block` holds the partition and repeats the error until it is fixed,
`skip` logs and counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from esupdater.backoff import Backoff
from esupdater.change import Position
from esupdater.stats import Stats

log = logging.getLogger(__name__)

#: Header names on dead-lettered records; `esupdater redrive` reads them back.
H_REASON = "esupdater.reason"
H_ERROR_CLASS = "esupdater.error_class"
H_HANDLER = "esupdater.handler"
H_TOPIC = "esupdater.source_topic"
H_PARTITION = "esupdater.source_partition"
H_OFFSET = "esupdater.source_offset"
H_ROW = "esupdater.row_index"
H_ATTEMPTS = "esupdater.attempts"
H_FIRST_SEEN = "esupdater.first_seen"


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a record (or one row of it, for one handler) could not be applied."""

    position: Position
    reason: str
    error_class: str
    handler: str = ""
    row_index: int | None = None  # None: the whole record (it could not be decoded)
    attempts: int = 1
    first_seen: float = field(default_factory=time.time)

    def describe(self) -> str:
        where = str(self.position)
        if self.row_index is not None:
            where += f" row {self.row_index}"
        if self.handler:
            where += f" in {self.handler}"
        return f"{where} after {self.attempts} attempt(s): {self.reason} ({self.error_class})"

    def headers(self) -> list[tuple[str, bytes]]:
        values = {
            H_REASON: self.reason,
            H_ERROR_CLASS: self.error_class,
            H_HANDLER: self.handler,
            H_TOPIC: self.position.topic,
            H_PARTITION: str(self.position.partition),
            H_OFFSET: str(self.position.offset),
            H_ROW: "" if self.row_index is None else str(self.row_index),
            H_ATTEMPTS: str(self.attempts),
            H_FIRST_SEEN: f"{self.first_seen:.3f}",
        }
        return [(name, value.encode()) for name, value in values.items()]


class SetAside:
    """Skip mode (and the base): log once, count, and let the stream go on."""

    #: True when a failure must hold its partition instead (block mode).
    blocks = False

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    async def put(self, value: bytes | None, failure: Failure) -> None:
        self.stats.dead_lettered += 1
        log.error("skipped %s", failure.describe())


class BlockOnFailure(SetAside):
    """Block mode: nothing is set aside; the caller keeps retrying and holds the partition."""

    blocks = True

    async def put(self, value: bytes | None, failure: Failure) -> None:
        raise RuntimeError("block mode sets nothing aside; the caller retries")  # pragma: no cover


class DeadLetterTopic(SetAside):
    """Produces failures to the dead-letter topic; waits for Kafka's acknowledgement.

    A Kafka outage is transient: the send is retried until it succeeds, and the row's
    offset is not committed meanwhile, so a dead letter is never lost.
    """

    def __init__(
        self, stats: Stats, producer: AIOKafkaProducer, topic: str, backoff: Backoff
    ) -> None:
        super().__init__(stats)
        self.producer = producer
        self.topic = topic
        self.backoff = backoff

    async def put(self, value: bytes | None, failure: Failure) -> None:
        attempt = 0
        while True:
            try:
                await self.producer.send_and_wait(
                    self.topic, value=value, headers=failure.headers()
                )
                break
            except KafkaError as exc:
                delay = self.backoff.delay(attempt)
                attempt += 1
                log.warning("dead-letter topic %s unavailable (%r), retrying in %.1fs",
                            self.topic, exc, delay)
                await asyncio.sleep(delay)
        self.stats.dead_lettered += 1
        log.error("dead-lettered to %s: %s", self.topic, failure.describe())
