"""The composition root: every command builds its parts here, from settings, in one order.

`run`, `redrive` (and the coming `backfill` and `verify`) enter `components(settings)` and get
the same counters, backoff, Elasticsearch client, bulk writer, decoder, set-aside mode and
handler runner; they add only what is theirs (a group consumer and its loop, a dead-letter
reader). Parts start in dependency order and close in reverse when the block ends, each
close bounded, so a client that will not close cannot hold a stop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from elasticsearch import AsyncElasticsearch

from esupdater.backoff import Backoff, retry
from esupdater.bulk import BulkLimits, BulkSink, BulkWriter
from esupdater.clients import make_elasticsearch
from esupdater.deadletter import PartitionGate, SetAside, dead_letter_producer, make_set_aside
from esupdater.decoding import Decoder, make_decoder
from esupdater.errors import UnreachableError
from esupdater.handling import HandlerRunner
from esupdater.settings import Settings
from esupdater.stats import Stats

log = logging.getLogger(__name__)

#: Seconds a client gets to close at shutdown.
CLOSE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Components:
    """What every command shares; `runner(gate)` makes the handler runner for its consumer."""

    settings: Settings
    stats: Stats
    backoff: Backoff
    es: AsyncElasticsearch
    writer: BulkWriter
    decoder: Decoder
    producer: AIOKafkaProducer | None
    set_aside: SetAside

    def runner(
        self, gate: PartitionGate | None = None, sink: BulkSink | None = None
    ) -> HandlerRunner:
        """The handler runner; `gate` holds partitions of the caller's consumer; `sink` wraps
        the writer for a caller whose writes follow other rules (a backfill's)."""
        return HandlerRunner(
            self.writer if sink is None else sink, self.es, self.stats, self.set_aside,
            max_attempts=self.settings.dead_letter.max_attempts, backoff=self.backoff,
            gate=gate,
        )


@asynccontextmanager
async def components(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    dead_letters: bool | None = None,
    give_up_after: float | None = None,
) -> AsyncIterator[Components]:
    """Build, start and (on exit, in reverse) close the shared parts.

    `dead_letters`: whether to start the dead-letter producer (None: when a topic is set).
    With `stop`, waiting for Kafka at start-up ends early when it is set; with
    `give_up_after` (one-shot commands), it ends after that many seconds with
    UnreachableError.
    """
    stats = Stats()
    backoff = Backoff.from_ms(settings.bulk.initial_backoff_ms, settings.bulk.max_backoff_ms)
    async with AsyncExitStack() as stack:
        es = make_elasticsearch(settings.elasticsearch)
        stack.push_async_callback(close_bounded, es.close, "Elasticsearch client")
        writer = BulkWriter(es, bulk_limits(settings), backoff,
                            quiet_retries=settings.bulk.max_retries, stats=stats)
        await writer.start()
        stack.push_async_callback(close_bounded, writer.close, "bulk writer")
        producer = None
        if settings.dead_letter.topic if dead_letters is None else dead_letters:
            producer = dead_letter_producer(settings)
            # Closed even if it never starts: a producer given up on still holds a client.
            stack.push_async_callback(close_bounded, producer.stop, "Kafka producer")
            await start_retrying(producer.start, "Kafka producer", backoff, stop,
                                 bootstrap=settings.kafka.bootstrap_servers,
                                 give_up_after=give_up_after)
        yield Components(
            settings=settings, stats=stats, backoff=backoff, es=es, writer=writer,
            decoder=make_decoder(settings.source), producer=producer,
            set_aside=make_set_aside(settings, stats, producer, backoff),
        )


def bulk_limits(settings: Settings) -> BulkLimits:
    return BulkLimits(
        chunk_size=settings.bulk.chunk_size,
        max_chunk_bytes=settings.bulk.max_chunk_bytes,
        flush_interval=settings.bulk.flush_interval_ms / 1000,
        max_in_flight=settings.bulk.max_requests_in_flight,
    )


async def close_bounded(close: Callable[[], Awaitable[None]], what: str) -> None:
    """Close one client within CLOSE_TIMEOUT; by then offsets are committed, so a client
    that will not close must not keep the process (and `esupdater stop`) waiting."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):  # not wait_for: it can swallow a cancel
            await close()
    except TimeoutError:
        log.warning("%s did not close within %.0fs; exiting anyway", what, CLOSE_TIMEOUT)


async def start_retrying(
    start: Callable[[], Awaitable[None]], what: str, backoff: Backoff,
    stop: asyncio.Event | None = None, *, bootstrap: str,
    give_up_after: float | None = None,
) -> None:
    """Kafka being down at start-up is transient too: wait for it, stoppable meanwhile;
    with `give_up_after`, at most that many seconds (then UnreachableError)."""
    started = time.monotonic()

    def worth_retrying(exc: BaseException) -> bool:
        if not isinstance(exc, KafkaError):
            return False
        if give_up_after is not None and time.monotonic() - started >= give_up_after:
            raise UnreachableError(
                f"cannot reach Kafka at {bootstrap} ({kafka_reason(exc)}; gave up after "
                f"{give_up_after:.0f} s)") from exc
        return True

    def report(exc: BaseException, attempt: int, delay: float) -> None:
        log.warning("cannot reach Kafka at %s (%s, %s); retrying in %.1f s", bootstrap, what,
                    kafka_reason(exc), delay)

    await retry(start, backoff, retry_on=worth_retrying, report=report, stop=stop)


def kafka_reason(exc: BaseException) -> str:
    """What went wrong, in words: aiokafka's repr of a refused bootstrap lists socket tuples."""
    if isinstance(exc, KafkaConnectionError):
        return "no connection"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
