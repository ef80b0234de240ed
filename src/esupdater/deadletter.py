"""Setting bad input aside: never dropped silently, always counted and logged once.

With a `[dead_letter] topic` the original bytes go there with headers saying why and where
from; `esupdater redrive` feeds them through the handlers again after a fix. Without one,
`on_failure` decides: `block` holds the partition and repeats the error until it is fixed,
`skip` logs and counts.

Kafka refuses two kinds of dead letter as they come: one larger than the producer's
`max_request_size` or the topic's `max.message.bytes`, and a tombstone (no value) without a
key. A too-large one is sent as a pointer instead (an empty value, the headers, and
`esupdater.value_omitted`), counted and logged as an error: the record itself stays in the
source topic, where the headers say, until that topic's retention removes it. A tombstone is
sent as a tombstone, keyed by its source position.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from esupdater.backoff import Backoff, retry
from esupdater.change import Position
from esupdater.clients import make_producer
from esupdater.settings import Settings
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
#: On a pointer dead letter only: the size in bytes of the value left in the source topic.
H_VALUE_OMITTED = "esupdater.value_omitted"

#: Header values are cut to this many bytes: a reason may repeat a large bad value, and
#: a dead letter twice the size of its record may not fit where the record did.
MAX_HEADER_BYTES = 2048

#: What Kafka answers when a record is too large for the request or the topic.
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


def capped(text: str, limit: int = MAX_HEADER_BYTES) -> bytes:
    """`text` as UTF-8, cut to at most `limit` bytes with a note saying how much was cut."""
    data = text.encode()
    if len(data) <= limit:
        return data
    note_room = len(f" ... [{len(data)} bytes cut]")  # the cut count has at most this many digits
    head = data[: limit - note_room].decode("utf-8", errors="ignore").encode()
    return head + f" ... [{len(data) - len(head)} bytes cut]".encode()


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

    def headers(self, value_omitted: int | None = None) -> list[tuple[str, bytes]]:
        """The dead letter's headers, each value at most MAX_HEADER_BYTES."""
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
        if value_omitted is not None:
            values[H_VALUE_OMITTED] = str(value_omitted)
        return [(name, capped(value)) for name, value in values.items()]


def dead_letter_producer(settings: Settings) -> AIOKafkaProducer:
    """The producer of dead letters, with `[dead_letter] max_request_size` as its limit."""
    return make_producer(settings.kafka, max_request_size=settings.dead_letter.max_request_size)


class PartitionGate(Protocol):
    """Holds a partition (fetching paused, offset stuck) while one of its rows is held."""

    def hold(self, position: Position) -> None: ...

    def release(self, position: Position) -> None: ...


#: Tries a blocked row once more: None when it went through, else why it failed again.
TryAgain = Callable[[], Awaitable["str | None"]]


@dataclass(frozen=True, slots=True)
class Unapplied:
    """A row (or a whole record) that cannot be applied, and what block mode needs of it:
    the gate that holds its partition and, for a row, how to try it again."""

    value: bytes | None
    failure: Failure
    gate: PartitionGate | None = None
    try_again: TryAgain | None = None


@dataclass
class SetAside:
    """Skip mode (and the base): log once, count, and let the stream go on.

    `give_up` is what every caller uses once a row (or a record) cannot be applied; each
    mode decides there: skip, produce to the dead-letter topic, or block.
    """

    stats: Stats

    async def give_up(self, unapplied: Unapplied) -> None:
        """The row cannot be applied: set it aside (this mode), so the stream goes on."""
        await self.put(unapplied.value, unapplied.failure)

    async def put(self, value: bytes | None, failure: Failure) -> None:
        self.stats.dead_lettered += 1
        log.error("skipped %s", failure.describe())


@dataclass
class BlockOnFailure(SetAside):
    """Block mode: nothing is set aside. The partition is held and the failure logged again
    and again; a row is tried again each time (`try_again`) and goes on once it succeeds, a
    record that cannot be decoded waits for a restart with another `[dead_letter]` setting."""

    backoff: Backoff

    async def give_up(self, unapplied: Unapplied) -> None:
        gate, failure = unapplied.gate, unapplied.failure
        if gate is not None:
            gate.hold(failure.position)
        try:
            await retry(partial(self._once_more, failure, unapplied.try_again), self.backoff,
                        retry_on=_still_blocked, report=_report_blocked)
        finally:
            if gate is not None:
                gate.release(failure.position)

    @staticmethod
    async def _once_more(failure: Failure, try_again: TryAgain | None) -> None:
        reason = failure.reason if try_again is None else await try_again()
        if reason is not None:
            raise _Blocked(replace(failure, reason=reason))

    async def put(self, value: bytes | None, failure: Failure) -> None:
        raise RuntimeError("block mode sets nothing aside; use give_up")  # pragma: no cover


class _Blocked(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.describe())
        self.failure = failure


def _still_blocked(exc: BaseException) -> bool:
    return isinstance(exc, _Blocked)


def _report_blocked(exc: BaseException, attempt: int, delay: float) -> None:
    log.error("BLOCKED %s: partition held until this is fixed (or set [dead_letter] topic or "
              'on_failure = "skip" and restart); again in %.1fs', exc, delay)


@dataclass
class DeadLetterTopic(SetAside):
    """Produces failures to the dead-letter topic; waits for Kafka's acknowledgement.

    A Kafka outage is transient: the send is retried until it succeeds, and the row's
    offset is not committed meanwhile, so a dead letter is never lost. A dead letter too
    large for Kafka is not transient: it goes as a pointer to the source record instead.
    """

    producer: AIOKafkaProducer
    topic: str
    backoff: Backoff
    max_request_size: int | None = None

    async def put(self, value: bytes | None, failure: Failure) -> None:
        # aiokafka sends no record without a key or a value; a tombstone's position is unique.
        key = str(failure.position).encode() if value is None else None
        try:
            await self._send(value, key, failure.headers(), too_large_is_final=True)
        except TOO_LARGE as exc:
            size = len(value or b"")
            log.error(
                "dead letter for %s too large for topic %s (%d bytes; %r): value omitted, "
                "sent with its headers and %s; the record stays at %s in the source topic "
                "until its retention removes it. Raise [dead_letter] max_request_size "
                "(now %s) and the topic's max.message.bytes to keep whole records",
                failure.position, self.topic, size, exc, H_VALUE_OMITTED, failure.position,
                self.max_request_size or "the default",
            )
            await self._send(b"", None, failure.headers(value_omitted=size),
                             too_large_is_final=False)
            self.stats.dead_letters_truncated += 1
        self.stats.dead_lettered += 1
        log.error("dead-lettered to %s: %s", self.topic, failure.describe())

    async def _send(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        *,
        too_large_is_final: bool,
    ) -> None:
        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, TOO_LARGE):
                return not too_large_is_final
            return isinstance(exc, KafkaError)

        await retry(
            partial(self.producer.send_and_wait, self.topic, value=value, key=key,
                    headers=headers),
            self.backoff, retry_on=retryable, report=self._report_retry,
        )

    def _report_retry(self, exc: BaseException, attempt: int, delay: float) -> None:
        if isinstance(exc, TOO_LARGE):
            log.error("even a dead letter without its value is too large for topic %s: "
                      "raise the topic's max.message.bytes; retrying in %.1fs", self.topic, delay)
        else:
            log.warning("dead-letter topic %s cannot take the record (%r), retrying in %.1fs",
                        self.topic, exc, delay)


def make_set_aside(
    settings: Settings, stats: Stats, producer: AIOKafkaProducer | None, backoff: Backoff
) -> SetAside:
    """The `[dead_letter]` mode: a topic (with `producer`), else block or skip."""
    if producer is not None and settings.dead_letter.topic:
        return DeadLetterTopic(stats, producer, settings.dead_letter.topic, backoff,
                               settings.dead_letter.max_request_size)
    if settings.dead_letter.on_failure == "block":
        return BlockOnFailure(stats, backoff)
    return SetAside(stats)
