"""`esupdater run`: the group consumer and its loop on top of the shared components, and
the process lifecycle around them.

As in the PHP tool esupdater replaces: the pidfile and a status file (`start`/`stop`) in
the runtime dir, the status re-read every `check_status_interval_seconds`. SIGTERM and
SIGINT drain the same way.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable
from contextlib import AsyncExitStack, suppress

from aiokafka import AIOKafkaConsumer
from elasticsearch import ApiError, AsyncElasticsearch

from esupdater.clients import make_consumer, make_elasticsearch
from esupdater.components import close_bounded, components, start_retrying
from esupdater.consume_loop import ConsumeLoop, rebalance_timeout_ms
from esupdater.dispatch import KeyedDispatcher
from esupdater.errors import ConfigError
from esupdater.feeding import Feeder
from esupdater.health import PartitionState, ProgressWatch
from esupdater.metrics import FreshnessSensor, serve_metrics
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
            offsets=OffsetTracker(), backoff=parts.backoff, gate=pauses, writer=parts.writer,
        )
        loop = ConsumeLoop(
            consumer, list(settings.kafka.topics), feeder, pauses, parts.stats,
            commit_interval=settings.kafka.commit_interval_ms / 1000,
            drain_timeout=settings.runtime.drain_timeout_seconds,
        )
        if stop.is_set():
            return
        await start_retrying(consumer.start, "Kafka consumer", parts.backoff, stop,
                             bootstrap=settings.kafka.bootstrap_servers)
        stack.push_async_callback(close_bounded, consumer.stop, "Kafka consumer")
        if stop.is_set():
            return
        await _check_topics(settings, consumer)
        parts.stats.sensor = FreshnessSensor(parts.stats)
        # Probes get a client of their own: a failing probe must not mark the writer's
        # nodes dead, nor wait behind its requests.
        probe_es = make_elasticsearch(settings.elasticsearch)
        stack.push_async_callback(close_bounded, probe_es.close, "Elasticsearch probe client")
        if settings.metrics.port:
            serve_metrics(settings.metrics.host, settings.metrics.port, parts.stats,
                          settings.metrics.stall_seconds)
        tune_gc()
        log.info("consuming %s as group %r from %s", ", ".join(settings.kafka.topics),
                 settings.kafka.group_id, settings.kafka.bootstrap_servers)
        watchers = [
            asyncio.create_task(_report(settings, loop, parts.stats, stop), name="stats"),
            asyncio.create_task(_probe(settings, consumer, probe_es, parts.stats, stop),
                                name="probes"),
        ]
        try:
            await loop.run(stop)
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)


#: Allocations between two young-generation collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Fewer, cheaper garbage collections on the hot path.

    Each row in flight holds some twenty objects (its change, row, context, task, bulk
    ticket), and every collection walks all of them: with a thousand rows in flight CPython's
    default (a young collection every 700 allocations) spent 13-38% of the CPU in the
    collector. After start-up, everything built so far (modules, handlers, clients) is frozen
    out of the collector's walks, and young collections run every 50,000 allocations; the
    rows themselves are freed by reference counting as before.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


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
    """Samples the gauges, judges progress (health.ProgressWatch) and writes the stats file
    `esupdater status` reads: the declared metrics (stats.py) plus pid, rows/s and the
    group; every `log.progress_interval_seconds`, one summary line in the log. The counters
    need no copying: every part of the service counts into `stats` itself."""
    watch = ProgressWatch(settings.metrics.stall_seconds)
    summary = ProgressSummary(settings.log.progress_interval_seconds)
    while not stop.is_set():
        await asyncio.sleep(settings.runtime.stats_interval_seconds)
        now = time.monotonic()
        states = pipeline.partition_states()
        watch.observe(now, states)
        stats.lag = pipeline.lag()
        stats.in_flight = pipeline.dispatcher.in_flight
        stats.assigned_partitions = len(states)
        stats.stalled_seconds = watch.stalled(now, states)
        stats.seconds_behind = seconds_behind(states, stats.applied_until, time.time())
        rate = stats.rate()
        snapshot = stats.snapshot()
        snapshot.update(
            pid=os.getpid(),
            updated_at=time.time(),
            rows_per_second=round(rate, 1),
            group_id=settings.kafka.group_id,
            stall_seconds=settings.metrics.stall_seconds,
        )
        write_stats(settings.runtime.dir, snapshot)
        summary.maybe_log(now, rate, stats)


def seconds_behind(
    states: dict[str, PartitionState], applied_until: dict[str, float], now: float
) -> dict[str, float]:
    """Per assigned partition: 0 when caught up, else now minus the binlog time of the last
    row applied (unknown, so left out, before the first one)."""
    behind = {}
    for name, state in states.items():
        if state.lag == 0:
            behind[name] = 0.0
        elif name in applied_until:
            behind[name] = round(max(0.0, now - applied_until[name]), 1)
    return behind


class ProgressSummary:
    """`progress: 1,234 rows/s, lag 56, 0.8 s behind, 12 in flight` every `interval` s."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = time.monotonic()

    def maybe_log(self, now: float, rate: float, stats: Stats) -> None:
        if self.interval <= 0 or now - self.last < self.interval:
            return
        self.last = now
        lag = sum(stats.lag.values())
        behind = max(stats.seconds_behind.values(), default=0.0)
        log.info("progress: %s rows/s, lag %s, %.1f s behind, %s in flight%s",
                 f"{rate:,.0f}", f"{lag:,}", behind, stats.in_flight,
                 f", STALLED {', '.join(sorted(stats.stalled_seconds))}"
                 if stats.stalled_seconds else "",
                 extra={"rows_per_second": round(rate, 1), "lag": lag,
                        "seconds_behind": behind, "in_flight": stats.in_flight})


#: Seconds between two probes of Kafka and Elasticsearch, and the most one may take.
PROBE_INTERVAL = 10.0
PROBE_TIMEOUT = 5.0


async def _probe(
    settings: Settings, consumer: AIOKafkaConsumer, es: AsyncElasticsearch, stats: Stats,
    stop: asyncio.Event,
) -> None:
    """Whether Kafka (a metadata request) and Elasticsearch (this node's cluster health:
    it needs the `monitor` privilege to say more, but any answer counts) answer, for
    /readyz."""
    while not stop.is_set():
        stats.kafka_up = int(await _answers(consumer.topics()))
        stats.elasticsearch_up = int(await _answers(es.cluster.health(local=True)))
        await asyncio.sleep(min(PROBE_INTERVAL, settings.metrics.stall_seconds / 4))


async def _answers(call: Awaitable[object]) -> bool:
    """Whether the server answered: any HTTP answer below 500 counts (a user allowed to
    write documents may not be allowed to read the cluster's root, and still it answers)."""
    try:
        await asyncio.wait_for(call, PROBE_TIMEOUT)
    except ApiError as exc:
        return int(exc.meta.status) < 500
    except Exception:  # noqa: BLE001 - any other failure means "not answering"
        return False
    return True


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig, stop)


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    log.info("%s received: draining", sig.name)
    stop.set()
