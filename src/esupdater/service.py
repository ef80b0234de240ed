"""`esupdater run`: wires settings, clients and the pipeline; owns the process lifecycle.

As in the seed tool: the pidfile and a status file (`start`/`stop`) in the runtime dir, the
status re-read every `check_status_interval_seconds`. SIGTERM and SIGINT drain the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from esupdater.backoff import Backoff
from esupdater.bulk import BulkLimits, BulkWriter
from esupdater.clients import make_consumer, make_elasticsearch
from esupdater.consumer import Pipeline, rebalance_timeout_ms
from esupdater.deadletter import (
    BlockOnFailure,
    DeadLetterTopic,
    SetAside,
    dead_letter_producer,
)
from esupdater.errors import ConfigError
from esupdater.handling import HandlerRunner
from esupdater.metrics import serve_metrics
from esupdater.routing import Registry, default_registry, load_handlers
from esupdater.runtime import PidFile, read_status, write_stats, write_status
from esupdater.settings import Settings, cleartext_credentials, no_handlers_message
from esupdater.stats import Stats

log = logging.getLogger(__name__)


async def serve(settings: Settings, registry: Registry | None = None) -> None:
    """Run until stopped (status file, SIGTERM, SIGINT); drain, commit, release the pidfile."""
    registry = registry or default_registry
    runtime_dir = settings.runtime.dir
    with PidFile(runtime_dir):
        write_status(runtime_dir, "start")
        if registry is default_registry:
            load_handlers(settings.handlers.package, registry)
        if not registry.routes:  # as `esupdater check` refuses it
            raise ConfigError(no_handlers_message(settings.handlers.package))
        for warning in cleartext_credentials(settings):
            log.warning("%s", warning)
        stop = asyncio.Event()
        _install_signal_handlers(stop)
        await _serve(settings, registry, stop)
        with suppress(FileNotFoundError):
            (runtime_dir / "esupdater.stats.json").unlink()
    log.info("stopped")


async def _serve(settings: Settings, registry: Registry, stop: asyncio.Event) -> None:
    stats = Stats()
    backoff = Backoff.from_ms(settings.bulk.initial_backoff_ms, settings.bulk.max_backoff_ms)
    es = make_elasticsearch(settings.elasticsearch)
    writer = BulkWriter(
        es,
        BulkLimits(
            chunk_size=settings.bulk.chunk_size,
            max_chunk_bytes=settings.bulk.max_chunk_bytes,
            flush_interval=settings.bulk.flush_interval_ms / 1000,
            max_in_flight=settings.bulk.max_in_flight,
        ),
        backoff,
        quiet_retries=settings.bulk.max_retries,
    )
    producer = dead_letter_producer(settings) if settings.dead_letter.topic else None
    set_aside = _set_aside(settings, stats, producer, backoff)
    runner = HandlerRunner(
        writer, es, stats, set_aside,
        max_attempts=settings.dead_letter.max_attempts, backoff=backoff,
    )
    consumer = make_consumer(
        settings.kafka,
        rebalance_timeout_ms=rebalance_timeout_ms(settings.runtime.drain_timeout_seconds),
    )
    pipeline = Pipeline(
        consumer, list(settings.kafka.topics), registry, runner, set_aside, stats,
        max_workers=settings.worker.max_workers,
        commit_interval=settings.kafka.commit_interval_ms / 1000,
        drain_timeout=settings.runtime.drain_timeout_seconds,
        backoff=backoff,
        tinyint1_as_bool=settings.worker.tinyint1_as_bool,
    )
    runner.gate = pipeline
    await writer.start()
    watchers: list[asyncio.Task[None]] = []
    try:
        if producer is not None:
            await _start_retrying(producer.start, "Kafka producer", backoff, stop)
        await _start_retrying(consumer.start, "Kafka consumer", backoff, stop)
        if stop.is_set():
            return
        await _check_topics(settings, consumer)
        if settings.metrics.port:
            serve_metrics(settings.metrics.host, settings.metrics.port, stats)
        log.info("consuming %s as group %r from %s", ", ".join(settings.kafka.topics),
                 settings.kafka.group_id, settings.kafka.bootstrap_servers)
        watchers = [
            asyncio.create_task(_watch_status(settings, stop), name="status-watch"),
            asyncio.create_task(_report(settings, pipeline, writer, stats, stop), name="stats"),
        ]
        await pipeline.run(stop)
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await writer.close()
        # Offsets are committed by now; a client that will not close must not keep the
        # process (and `esupdater stop`) waiting.
        await _bounded(consumer.stop(), "Kafka consumer")
        if producer is not None:
            await _bounded(producer.stop(), "Kafka producer")
        await _bounded(es.close(), "Elasticsearch client")


#: Seconds a client gets to close at shutdown.
CLOSE_TIMEOUT = 10.0


async def _bounded(closing: Awaitable[None], what: str) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):  # not wait_for: see Pipeline.commit
            await closing
    except TimeoutError:
        log.warning("%s did not close within %.0fs; exiting anyway", what, CLOSE_TIMEOUT)


async def _start_retrying(
    start: Callable[[], Awaitable[None]], what: str, backoff: Backoff, stop: asyncio.Event
) -> None:
    """Kafka being down at start-up is transient too: wait for it, stoppable meanwhile."""
    attempt = 0
    while not stop.is_set():
        try:
            await start()
            return
        except KafkaError as exc:
            delay = backoff.delay(attempt)
            attempt += 1
            log.warning("%s cannot start (%r); retrying in %.1fs", what, exc, delay)
            with suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()


async def _check_topics(settings: Settings, consumer: AIOKafkaConsumer) -> None:
    existing = await consumer.topics()
    topic = settings.dead_letter.topic
    if topic and topic not in existing:
        raise ConfigError(
            f"dead_letter.topic {topic!r} does not exist in Kafka at "
            f"{settings.kafka.bootstrap_servers}: create it, or unset it"
        )
    for missing in sorted(set(settings.kafka.topics) - existing):
        log.warning("topic %r does not exist yet: waiting for it", missing)


def _set_aside(
    settings: Settings, stats: Stats, producer: AIOKafkaProducer | None, backoff: Backoff
) -> SetAside:
    if producer is not None and settings.dead_letter.topic:
        return DeadLetterTopic(stats, producer, settings.dead_letter.topic, backoff,
                               settings.dead_letter.max_request_size)
    if settings.dead_letter.on_failure == "block":
        return BlockOnFailure(stats)
    return SetAside(stats)


async def _watch_status(settings: Settings, stop: asyncio.Event) -> None:
    """The seed's contract: `stop` in the status file ends the process gracefully."""
    while not stop.is_set():
        await asyncio.sleep(settings.runtime.check_status_interval_seconds)
        if read_status(settings.runtime.dir) == "stop":
            log.info("status file says stop: draining")
            stop.set()


async def _report(
    settings: Settings, pipeline: Pipeline, writer: BulkWriter, stats: Stats, stop: asyncio.Event
) -> None:
    """Writes the stats file `esupdater status` reads: pid, uptime, rows/s, lag, errors."""
    while not stop.is_set():
        await asyncio.sleep(settings.runtime.stats_interval_seconds)
        stats.lag = pipeline.lag()
        stats.in_flight = pipeline.dispatcher.in_flight
        stats.bulk_requests = writer.requests
        stats.es_retries = writer.transient_failures
        stats.es_held = writer.held_failures
        stats.stale_writes = writer.stale_writes
        stats.writes_applied = writer.applied_writes
        snapshot = stats.snapshot()
        snapshot.update(
            pid=os.getpid(),
            updated_at=time.time(),
            rows_per_second=round(stats.rate(), 1),
            group_id=settings.kafka.group_id,
        )
        write_stats(settings.runtime.dir, snapshot)


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig, stop)


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    log.info("%s received: draining", sig.name)
    stop.set()
