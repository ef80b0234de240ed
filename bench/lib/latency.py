"""Latency at a steady load: from the Kafka record's timestamp to Elasticsearch's ack.

A paced producer writes the users dataset, encoded beforehand, at a fixed rate (half the best
measured rate) into an empty topic that an esupdater child is already consuming. Each message
carries the same millisecond as its Kafka CreateTime and as Canal's `es` (execution time);
the child's probe takes `change.executed_at` after `await ctx.index(...)` returned (with a
mapper: when the service reports the row done, on its acknowledgement; D: when its batch's
`async_bulk` returned), so each sample is "record timestamp ->
acknowledged by Elasticsearch". The first `warmup` seconds are dropped.

The index refreshes as a live one does (`LIVE_INDEX_SETTINGS`: Elasticsearch's default, 1 s),
unlike the backlog's (-1). An index that never refreshes keeps its rows in the indexing
buffer until that holds 10 % of the heap; Elasticsearch then writes it on a bulk thread,
~0.5 s without indexing, every ~235,000 rows of the stack's 1 GB heap. A window at half the
best rate holds twice that, so it measured that write (D's p99 1.5 s as well), not the flow.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.lib.dataset import encode, statements
from bench.lib.e2e import BATCH, RunResult, Variant, run_esupdater
from bench.lib.stack import INDEX_SETTINGS, RAW_DATES_MAPPING, Stack
from tools.local_stack import KAFKA

#: The backlog's index settings with the refresh left at Elasticsearch's default (1 s).
LIVE_INDEX_SETTINGS: dict[str, Any] = {
    name: value for name, value in INDEX_SETTINGS.items() if name != "refresh_interval"
}


@dataclass
class Latency:
    rate: float  # target rows/s
    achieved_rate: float  # rows/s the producer actually sent
    seconds: float
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    run: RunResult

    def summary(self) -> dict[str, Any]:
        return {
            "variant": self.run.variant.label,
            "target_rows_per_second": round(self.rate, 1),
            "produced_rows_per_second": round(self.achieved_rate, 1),
            "seconds": self.seconds,
            "samples": self.samples,
            "p50_ms": round(self.p50_ms, 1),
            "p99_ms": round(self.p99_ms, 1),
            "max_ms": round(self.max_ms, 1),
            "peak_rss_mb": round(self.run.peak_rss_mb, 1),
            "other_cpu_share": round(self.run.other_cpu_share, 3),
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted `values`."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[rank - 1]


#: Each message is encoded before the clock starts with this `es`, which the send time replaces.
_ES_PLACEHOLDER = b'"es":0,'


@dataclass(frozen=True, slots=True)
class Timed:
    """One message encoded ahead, split where its send time goes."""

    partition: int
    rows: int
    head: bytes
    tail: bytes

    def at(self, ms: int) -> bytes:
        return b"%s%d%s" % (self.head, ms, self.tail)


def encoded_ahead(rows: int, *, partitions: int, rows_per_message: int) -> list[list[Timed]]:
    """The dataset's first `rows` rows, one list of messages per statement (they share a send
    time). Encoding as the clock runs cost the producer more CPU than the service it loads
    (generating rows, then JSON), which crowded the two cores and the tail it measures."""
    ahead: list[list[Timed]] = []
    for statement in statements(rows, partitions=partitions):
        group = []
        for partition, value, n in encode(statement, rows_per_message, es_ms=0):
            head, found, tail = value.partition(_ES_PLACEHOLDER)
            assert found, "a flat message without its es field"
            group.append(Timed(partition, n, head + b'"es":', b"," + tail))
        ahead.append(group)
    return ahead


async def paced(topic: str, rate: float, ahead: list[list[Timed]]) -> tuple[int, float]:
    """Produce `ahead` at `rate` rows/s, each message stamped (Kafka CreateTime and Canal's
    `es`) as it is sent; (rows sent, seconds taken)."""
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks=1, linger_ms=1)
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        for group in ahead:
            due = sent / rate - (time.monotonic() - started)
            if due > 0:  # sent more than due by now: wait until it is due
                await asyncio.sleep(due)
            now_ms = time.time_ns() // 1_000_000
            for message in group:
                await producer.send(topic, message.at(now_ms), partition=message.partition,
                                    timestamp_ms=now_ms)
                sent += message.rows
        await producer.flush()
    finally:
        await producer.stop()
    return sent, time.monotonic() - started


async def measure(
    stack: Stack, variant: Variant, rate: float, seconds: float, *,
    partitions: int, warmup: float, es_pid: int | None = None,
) -> Latency:
    kind = (f"latency-{variant.rows_per_message}" + ("-mapper" if variant.mapper else "")
            + ("-d" if variant.program == BATCH else ""))
    topic = await stack.create_topic(kind, partitions)
    index = await stack.create_index(
        kind, mappings=RAW_DATES_MAPPING if variant.program == BATCH else None,
        settings=LIVE_INDEX_SETTINGS)
    produced: dict[str, float] = {}
    ahead = encoded_ahead(int(rate * (warmup + seconds)), partitions=partitions,
                          rows_per_message=variant.rows_per_message)

    async def feed() -> None:
        produced["start"] = time.time()
        rows, took = await paced(topic, rate, ahead)
        produced["rate"] = rows / took

    try:
        run = await run_esupdater(stack, variant, topic, partitions, index=index,
                                  latency=True, feed=feed, es_pid=es_pid)
    finally:
        await stack.drop_index(index)
    cutoff = produced["start"] + warmup
    pairs = run.samples
    latencies = sorted(
        pairs[i + 1] * 1000 for i in range(0, len(pairs), 2) if pairs[i] >= cutoff
    )
    return Latency(
        rate=rate, achieved_rate=produced["rate"], seconds=seconds, samples=len(latencies),
        p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else math.nan, run=run,
    )
