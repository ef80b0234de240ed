"""Freshness through the real path: a MariaDB commit -> the document is searchable.

An `esupdater run` child (bench.child) follows Canal's flat topic of the local stack
(`canal_shop`, stack/canal.sh) from its end offsets, routing only a fresh table of `shop`
(a `t_` name: Canal publishes it; `quiet_` tables it leaves out). Rows are inserted one per
transaction at a steady rate (two connections side by side); each row carries the time it
was sent, and the time its commit returned is kept here. Meanwhile `_search` polls (an `ids`
query over the rows not yet seen) find when each becomes searchable. The index keeps
Elasticsearch's default refresh (1 s), as a user's would: a document is searchable at the
next refresh after its write, so up to a second of every figure is the refresh. The child
also notes when each row was acknowledged, which tells the pipeline's part from the
refresh's.

The table is dropped only once its last row was searchable, so Canal has parsed every row of
it by then (a table dropped before Canal reads its rows stops Canal's instance).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

from aiokafka.structs import OffsetAndMetadata, TopicPartition

from bench.lib import mariadb
from bench.lib.e2e import RunResult, Variant, run_esupdater
from bench.lib.latency import percentile
from bench.lib.stack import Stack
from esupdater.clients import make_consumer, topic_partitions
from esupdater.settings import KafkaSettings
from tools.local_stack import KAFKA, MARIADB_DATABASE

#: stack/canal.sh's flat topic, hashed by primary key over its partitions.
CANAL_TOPIC = "canal_shop"
COLUMNS = "id BIGINT PRIMARY KEY, sent_at DATETIME(6) NOT NULL, note VARCHAR(32) NOT NULL"
MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {"id": {"type": "long"}, "sent_at": {"type": "date"},
                   "note": {"type": "keyword"}},
}
#: One shard, no replica like every index of the benchmark; refresh left at its default.
SETTINGS: dict[str, Any] = {"number_of_shards": 1, "number_of_replicas": 0}
POLL_SECONDS = 0.02
#: Ids per `ids` query: the oldest rows not seen yet.
POLL_IDS = 5_000
TARGET_P99_MS = 1000.0
#: Connections inserting side by side.
WRITERS = 2


@dataclass
class Freshness:
    table: str
    rate: float  # rows/s asked for
    produced_rate: float
    seconds: float
    rows: int
    found: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    commit_ms: float  # mean time for an INSERT's autocommit to return
    ack_p50_ms: float  # commit -> Elasticsearch acknowledged the write (before any refresh)
    ack_p99_ms: float
    dropped: bool
    run: RunResult | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "table": f"{MARIADB_DATABASE}.{self.table}",
            "topic": CANAL_TOPIC,
            "target_rows_per_second": self.rate,
            "produced_rows_per_second": round(self.produced_rate, 1),
            "seconds": self.seconds,
            "rows": self.rows,
            "searchable": self.found,
            "p50_ms": round(self.p50_ms, 1),
            "p99_ms": round(self.p99_ms, 1),
            "max_ms": round(self.max_ms, 1),
            "mean_insert_commit_ms": round(self.commit_ms, 2),
            "acknowledged_p50_ms": round(self.ack_p50_ms, 1),
            "acknowledged_p99_ms": round(self.ack_p99_ms, 1),
            "refresh_interval": "default (1s)",
            "table_dropped": self.dropped,
            "other_cpu_share": round(self.run.other_cpu_share, 3) if self.run else None,
        }


class Tracker:
    """Commit times of the rows inserted and when each was first seen searchable."""

    def __init__(self) -> None:
        self.committed: dict[int, float] = {}  # ids 1, 2, ...
        self.seen: dict[int, float] = {}
        self._oldest = 1  # every id below it is seen
        self._highest = 0

    def commit(self, row: int, at: float) -> None:
        self.committed[row] = at
        self._highest = max(self._highest, row)

    def pending(self, limit: int) -> list[int]:
        """The oldest `limit` committed ids not seen yet."""
        while self._oldest in self.seen:
            self._oldest += 1
        waiting = []
        for i in range(self._oldest, self._highest + 1):
            if i in self.committed and i not in self.seen:
                waiting.append(i)
                if len(waiting) == limit:
                    break
        return waiting

    def latencies_ms(self) -> list[float]:
        return sorted(max(0.0, self.seen[i] - at) * 1000
                      for i, at in self.committed.items() if i in self.seen)

    def ack_latencies_ms(self, acks: list[float]) -> list[float]:
        """From (primary key, ack time) pairs: commit -> acknowledged, per row."""
        acked = {int(acks[i]): acks[i + 1] for i in range(0, len(acks), 2)}
        return sorted(max(0.0, acked[i] - at) * 1000
                      for i, at in self.committed.items() if i in acked)


async def start_at_end(group: str, topic: str) -> int:
    """Commits `group`'s offsets at the topic's end: the child starts after what is there.
    Returns the number of partitions."""
    kafka = KafkaSettings(bootstrap_servers=KAFKA, group_id=group)
    partitions = (await topic_partitions(kafka, [topic])).get(topic)
    if not partitions:
        raise RuntimeError(f"no topic {topic}: is Canal running? `stack/stack.sh status`")
    consumer = make_consumer(kafka)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in ends.items()})
        return len(tps)
    finally:
        await consumer.stop()


async def _insert(table: str, rate: float, seconds: float, tracker: Tracker,
                  writers: int = WRITERS) -> tuple[int, float, float]:
    """One row per transaction, `rate` rows/s in all over `writers` connections (one alone
    tops out near 1 / commit time); (rows, seconds taken, mean seconds per commit)."""
    rows = int(rate * seconds)
    spent: list[float] = []
    started = time.monotonic()

    async def write(first: int) -> None:
        connection = await mariadb.connect()
        try:
            for i in range(first, rows + 1, writers):
                ahead = (i - 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
                sent = time.time()
                await mariadb.execute(
                    connection, f"INSERT INTO {table} VALUES (%s, FROM_UNIXTIME(%s), %s)",
                    (i, round(sent, 6), f"row {i}"))
                tracker.commit(i, time.time())
                spent.append(tracker.committed[i] - sent)
        finally:
            connection.close()

    await asyncio.gather(*(write(first) for first in range(1, writers + 1)))
    return rows, time.monotonic() - started, sum(spent) / max(len(spent), 1)


async def _poll(stack: Stack, index: str, tracker: Tracker, done: asyncio.Event) -> None:
    """Until `done` and every committed row is seen: which pending rows are searchable."""
    assert stack.es is not None
    while not (done.is_set() and len(tracker.seen) >= len(tracker.committed)):
        ids = tracker.pending(POLL_IDS)
        if ids:
            found = await stack.es.search(
                index=index, query={"ids": {"values": [str(i) for i in ids]}},
                size=len(ids), source=False, track_total_hits=False,
            )
            now = time.time()  # an upper bound: searchable at the latest when answered
            for hit in found["hits"]["hits"]:
                tracker.seen.setdefault(int(hit["_id"]), now)
        await asyncio.sleep(POLL_SECONDS)


async def measure(
    stack: Stack, *, rate: float, seconds: float, es_pid: int | None, wait: float = 120.0
) -> Freshness:
    """Insert at `rate` rows/s for `seconds`; then wait at most `wait` s for the last rows."""
    table = f"t_bench_fresh_{stack.run_id.replace('-', '_')}"
    index = await stack.create_index("fresh", mappings=MAPPING, settings=SETTINGS)
    group = stack.name("group-fresh")
    connection = await mariadb.connect()
    tracker = Tracker()
    produced: dict[str, float] = {}
    run: RunResult | None = None
    try:
        await mariadb.execute(connection, f"CREATE TABLE {table} ({COLUMNS})")
        partitions = await start_at_end(group, CANAL_TOPIC)

        async def feed() -> None:
            done = asyncio.Event()
            polling = asyncio.create_task(_poll(stack, index, tracker, done))
            try:
                rows, took, committing = await _insert(table, rate, seconds, tracker)
                produced.update(rows=rows, rate=rows / took, commit=committing)
                done.set()
                await asyncio.wait_for(polling, wait)
            except TimeoutError:
                pass  # reported: fewer rows searchable than inserted
            finally:
                polling.cancel()

        run = await run_esupdater(stack, Variant(1), CANAL_TOPIC, partitions, index=index,
                                  feed=feed, route=f"{MARIADB_DATABASE}.{table}", acks=True,
                                  es_pid=es_pid, group=group)
    finally:
        dropped = len(tracker.seen) == len(tracker.committed)
        if dropped:  # every row was searchable, so read by Canal: the table can go
            await mariadb.execute(connection, f"DROP TABLE IF EXISTS {table}")
        connection.close()
        await stack.drop_index(index)
    latencies = tracker.latencies_ms()
    acked = tracker.ack_latencies_ms(run.acks if run else [])
    return Freshness(
        table=table, rate=rate, produced_rate=produced.get("rate", 0.0), seconds=seconds,
        rows=len(tracker.committed), found=len(latencies),
        p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else math.nan,
        commit_ms=1000 * produced.get("commit", math.nan), dropped=dropped, run=run,
        ack_p50_ms=percentile(acked, 50), ack_p99_ms=percentile(acked, 99),
    )
