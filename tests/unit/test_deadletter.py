"""Dead-letter headers and the too-large path, with a producer that fails as Kafka does.

The real-Kafka behaviour is in tests/integration/test_dead_letters.py; these pin the
pure logic: header caps, the pointer's headers, the counters, and which errors are retried.
"""

from __future__ import annotations

from typing import Any

from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from esupdater.backoff import Backoff
from esupdater.change import Position
from esupdater.deadletter import (
    H_OFFSET,
    H_REASON,
    H_VALUE_OMITTED,
    MAX_HEADER_BYTES,
    DeadLetterTopic,
    Failure,
    capped,
)
from esupdater.stats import Stats

POSITION = Position("binlog", 3, 41)


class FakeProducer:
    """Fails the first sends with the given errors, then records what it was sent."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.sent: list[dict[str, Any]] = []

    async def send_and_wait(self, topic: str, **kwargs: Any) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append({"topic": topic, **kwargs})


def dead_letters(producer: FakeProducer, stats: Stats) -> DeadLetterTopic:
    return DeadLetterTopic(stats, producer, "dlq", Backoff(0.0, 0.0),  # type: ignore[arg-type]
                           max_request_size=1024 * 1024)


def test_a_short_header_is_kept_as_it_is() -> None:
    assert capped("ValueError: bad") == b"ValueError: bad"


def test_a_long_header_is_cut_to_the_cap_saying_how_much_was_cut() -> None:
    text = "ValueError: " + "é" * 400_000  # two bytes each: the cut must not split one

    cut = capped(text)

    assert len(cut) <= MAX_HEADER_BYTES
    kept = cut.decode()  # still valid UTF-8
    assert kept.startswith("ValueError: éé")
    head, _, note = kept.partition(" ... [")
    assert note == f"{len(text.encode()) - len(head.encode())} bytes cut]"


def test_every_header_of_a_failure_repeating_a_large_value_is_capped() -> None:
    failure = Failure(POSITION, "ValueError: " + "x" * 700_000, "ValueError",
                      handler="h" * 10_000, row_index=0)

    headers = dict(failure.headers())

    assert all(len(value) <= MAX_HEADER_BYTES for value in headers.values())
    assert headers[H_OFFSET] == b"41"
    assert H_VALUE_OMITTED not in headers


async def test_a_dead_letter_refused_as_too_large_is_sent_as_a_pointer_and_counted() -> None:
    producer = FakeProducer(MessageSizeTooLargeError("too large"))
    stats = Stats()
    failure = Failure(POSITION, "bad protobuf", "CanalDecodeError")

    await dead_letters(producer, stats).put(b"v" * 2_000_000, failure)

    (sent,) = producer.sent
    assert sent["value"] == b""
    headers = dict(sent["headers"])
    assert headers[H_VALUE_OMITTED] == b"2000000"
    assert headers[H_REASON] == b"bad protobuf"
    assert (stats.dead_lettered, stats.dead_letters_truncated) == (1, 1)


async def test_a_kafka_outage_is_retried_and_the_whole_record_sent() -> None:
    producer = FakeProducer(KafkaConnectionError(), KafkaConnectionError())
    stats = Stats()

    await dead_letters(producer, stats).put(b"value", Failure(POSITION, "r", "E"))

    (sent,) = producer.sent
    assert sent["value"] == b"value"
    assert sent["key"] is None
    assert (stats.dead_lettered, stats.dead_letters_truncated) == (1, 0)


async def test_a_tombstone_is_sent_without_a_value_keyed_by_its_source_position() -> None:
    producer = FakeProducer()
    stats = Stats()

    await dead_letters(producer, stats).put(None, Failure(POSITION, "a tombstone", "E"))

    (sent,) = producer.sent
    assert sent["value"] is None
    assert sent["key"] == b"binlog/3@41"
    assert stats.dead_lettered == 1
