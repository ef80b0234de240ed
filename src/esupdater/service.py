"""`esupdater run`: the group consumer and its loop on top of the shared components, and
the process lifecycle around them.

As in the PHP tool esupdater replaces: the pidfile and a status file (`start`/`stop`) in
the runtime dir, the status re-read every `check_status_interval_seconds`. SIGTERM and
SIGINT drain the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from contextlib import AsyncExitStack, suppress

from aiokafka import AIOKafkaConsumer

from esupdater.clients import make_consumer
from esupdater.components import close_bounded, components, start_retrying
from esupdater.consume_loop import ConsumeLoop, rebalance_timeout_ms
from esupdater.dispatch import KeyedDispatcher
from esupdater.errors import ConfigError
from esupdater.feeding import Feeder
from esupdater.metrics import serve_metrics
from esupdater.offsets import OffsetTracker
from esupdater.pauses import PartitionPauses
from esupdater.routing import Registry, default_registry, load_handlers
from esupdater.runtime_dir import PidFile, read_status, write_stats, write_status
from esupdater.settings import Settings, no_handlers_message, settings_warnings
from esupdater.stats import Stats

log = logging.getLogger(__name__)


async def serve(settings: Settings, registry: Registry | None = None) -> None:
    """Run until stopped (status file, SIGTERM, SIGINT); drain, commit, release the pidfile."""
    registry = registry or default_registry
    runtime_dir = settings.runtime.dir
    with PidFile(runtime_dir):
        write_status(runtime_dir, "start")
        if registry is default_registry:
            load_handlers(settings.handlers.package, registry, settings.folder)
        if not registry.routes:  # as `esupdater check` refuses it
            raise ConfigError(no_handlers_message(settings.handlers.package))
        for warning in settings_warnings(settings):
            log.warning("%s", warning)
        stop = asyncio.Event()
        _install_signal_handlers(stop)
        # Watched from the start: `esupdater stop` must also end a wait for Kafka at start-up.
        watching = asyncio.create_task(_watch_status(settings, stop), name="status-watch")
        try:
            await _serve(settings, registry, stop)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        with suppress(FileNotFoundError):
            (runtime_dir / "esupdater.stats.json").unlink()
    log.info("stopped")


async def _serve(settings: Settings, registry: Registry, stop: asyncio.Event) -> None:
    async with components(settings, stop=stop) as parts, AsyncExitStack() as stack:
        consumer = make_consumer(
            settings.kafka,
            rebalance_timeout_ms=rebalance_timeout_ms(settings.runtime.drain_timeout_seconds),
        )
        pauses = PartitionPauses(consumer)
        feeder = Feeder(
            parts.decoder, registry, parts.runner(gate=pauses), parts.set_aside, parts.stats,
            dispatcher=KeyedDispatcher(settings.dispatch.max_rows_in_flight),
            offsets=OffsetTracker(), backoff=parts.backoff, gate=pauses,
        )
        loop = ConsumeLoop(
            consumer, list(settings.kafka.topics), feeder, pauses, parts.stats,
            commit_interval=settings.kafka.commit_interval_ms / 1000,
            drain_timeout=settings.runtime.drain_timeout_seconds,
        )
        if stop.is_set():
            return
        await start_retrying(consumer.start, "Kafka consumer", parts.backoff, stop)
        stack.push_async_callback(close_bounded, consumer.stop, "Kafka consumer")
        if stop.is_set():
            return
        await _check_topics(settings, consumer)
        if settings.metrics.port:
            serve_metrics(settings.metrics.host, settings.metrics.port, parts.stats)
        log.info("consuming %s as group %r from %s", ", ".join(settings.kafka.topics),
                 settings.kafka.group_id, settings.kafka.bootstrap_servers)
        reporting = asyncio.create_task(_report(settings, loop, parts.stats, stop), name="stats")
        try:
            await loop.run(stop)
        finally:
            reporting.cancel()
            await asyncio.gather(reporting, return_exceptions=True)


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


async def _watch_status(settings: Settings, stop: asyncio.Event) -> None:
    """The PHP tool's contract, kept: `stop` in the status file ends the process gracefully."""
    while not stop.is_set():
        await asyncio.sleep(settings.runtime.check_status_interval_seconds)
        if read_status(settings.runtime.dir) == "stop":
            log.info("status file says stop: draining")
            stop.set()


async def _report(
    settings: Settings, pipeline: ConsumeLoop, stats: Stats, stop: asyncio.Event
) -> None:
    """Samples the gauges and writes the stats file `esupdater status` reads: the declared
    metrics (stats.py) plus pid, rows/s and the group. The counters need no copying: every
    part of the service counts into `stats` itself."""
    while not stop.is_set():
        await asyncio.sleep(settings.runtime.stats_interval_seconds)
        stats.lag = pipeline.lag()
        stats.in_flight = pipeline.dispatcher.in_flight
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
