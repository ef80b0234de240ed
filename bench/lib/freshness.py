"""Freshness through the real path: a MariaDB commit -> the document is searchable, and
where that time goes.

An `esupdater run` child (bench.child) follows Canal's flat topic of the local stack
(`canal_shop`, stack/canal.sh) from its end offsets, routing only a fresh table of `shop`
(a `t_` name: Canal publishes it; `quiet_` tables it leaves out). Rows are inserted one per
transaction at a steady rate (two connections side by side); each row carries the time it
was sent, and the time its commit returned is kept here. Meanwhile `_search` polls (an `ids`
query over the rows not yet seen) find when each becomes searchable.

A document is searchable at the first refresh after its write, so the index's refresh
interval is part of every figure: one measurement per interval asked for (`default` leaves
it unset, Elasticsearch's 1 s, as a user's index would be), each on its own table, index
and group. Each row's time is split in three stages, so the pipeline's part is told from
the refresh's:

- commit -> Kafka: Canal's part, up to its Kafka record's timestamp (CreateTime, set by
  Canal's producer as it takes the record, read back from the topic after the inserts);
- Kafka -> acknowledged: the broker, esupdater's fetch and its bulk write (the child notes
  when each row's write was acknowledged); Canal's producer batching (linger) falls here;
- acknowledged -> searchable: the refresh, plus up to one poll (20 ms) and a search.

The table is dropped only once its last row was searchable, so Canal has parsed every row of
it by then (a table dropped before Canal reads its rows stops Canal's instance).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.errors import KafkaError
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
#: One shard, no replica like every index of the benchmark; refresh as asked (index_settings).
SETTINGS: dict[str, Any] = {"number_of_shards": 1, "number_of_replicas": 0}
#: The refresh left unset: Elasticsearch's default, 1 s (what a user's index has).
DEFAULT_REFRESH = "default"
#: A refresh_interval Elasticsearch takes that lets rows become searchable: a whole, positive
#: time value (not -1, which never refreshes: the run would wait out its rows and keep its table).
REFRESH_VALUE = re.compile(r"[1-9][0-9]*(?:d|h|m|s|ms|micros|nanos)")
POLL_SECONDS = 0.02
#: Ids per `ids` query: the oldest rows not seen yet.
POLL_IDS = 5_000
TARGET_P99_MS = 1000.0
#: Connections inserting side by side.
WRITERS = 2
#: Each row's time, in order, between its commit and its being searchable (results.json keys).
STAGES = ("commit_to_kafka", "kafka_to_acknowledged", "acknowledged_to_searchable")
STAGE_NAMES = {"commit_to_kafka": "commit -> Kafka",
               "kafka_to_acknowledged": "Kafka -> acknowledged",
               "acknowledged_to_searchable": "acknowledged -> searchable"}
#: How long reading the run's Canal records back may take before the stages go without the rest.
READ_BACK_SECONDS = 60.0


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
    refresh: str = DEFAULT_REFRESH  # the index's refresh_interval, or DEFAULT_REFRESH (unset)
    #: Per stage (STAGES), the rows' times in ms, sorted; a row missing an end is left out.
    stages: dict[str, list[float]] = field(default_factory=dict, repr=False)

    @property
    def refresh_label(self) -> str:
        return "default (1s)" if self.refresh == DEFAULT_REFRESH else self.refresh

    def stage_figures(self) -> dict[str, dict[str, Any]]:
        """p50/p99 (ms) of each stage and the rows it covers; None for a stage with no row."""
        found: dict[str, dict[str, Any]] = {}
        for name in STAGES:
            times = self.stages.get(name, [])
            found[name] = {"p50": _ms(percentile(times, 50)), "p99": _ms(percentile(times, 99)),
                           "rows": len(times)}
        return found

    def stages_line(self, quantile: str = "p99") -> str:
        """The stages' `quantile` in words: `commit -> Kafka p99 40 ms, ...`."""
        figures = self.stage_figures()
        return ", ".join(
            f"{STAGE_NAMES[name]} {quantile} "
            + ("-" if figures[name][quantile] is None else f"{figures[name][quantile]:.0f}")
            + " ms" for name in STAGES)

    def summary(self) -> dict[str, Any]:
        return {
            "table": f"{MARIADB_DATABASE}.{self.table}",
            "topic": CANAL_TOPIC,
            "target_rows_per_second": self.rate,
            "produced_rows_per_second": round(self.produced_rate, 1),
            "seconds": self.seconds,
            "rows": self.rows,
            "searchable": self.found,
            "p50_ms": _ms(self.p50_ms),
            "p99_ms": _ms(self.p99_ms),
            "max_ms": _ms(self.max_ms),
            "mean_insert_commit_ms": _ms(self.commit_ms, 2),
            "acknowledged_p50_ms": _ms(self.ack_p50_ms),
            "acknowledged_p99_ms": _ms(self.ack_p99_ms),
            "stages_ms": self.stage_figures(),
            "refresh_interval": self.refresh_label,
            "table_dropped": self.dropped,
            "other_cpu_share": round(self.run.other_cpu_share, 3) if self.run else None,
        }


def _ms(value: float, digits: int = 1) -> float | None:
    """Rounded, or None where there was nothing to measure (JSON has no NaN)."""
    return None if math.isnan(value) else round(value, digits)


def index_settings(refresh: str) -> dict[str, Any]:
    """The freshness index's settings: `refresh` set unless it is the default (left unset, so
    the figure is what an index created without thought gives)."""
    if refresh == DEFAULT_REFRESH:
        return dict(SETTINGS)
    return {**SETTINGS, "refresh_interval": refresh}


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
        acked = acked_at(acks)
        return sorted(max(0.0, acked[i] - at) * 1000
                      for i, at in self.committed.items() if i in acked)


def acked_at(acks: list[float]) -> dict[int, float]:
    """Each row's acknowledgement time from the child's flat (primary key, time) pairs; a
    redelivered row keeps its first: its document was written, and could be found, from then."""
    found: dict[int, float] = {}
    for i in range(0, len(acks) - 1, 2):
        found.setdefault(int(acks[i]), acks[i + 1])
    return found


def record_times(records: Iterable[tuple[bytes | None, int]], table: str) -> dict[int, float]:
    """Each row of `table` in Canal's flat records (value, Kafka timestamp in ms): the time
    (s) of the first record carrying it. A record may carry several rows; DDL, other tables
    and anything that is no flat message (the topic is shared) are passed over."""
    found: dict[int, float] = {}
    for value, timestamp in records:
        if not value:
            continue
        try:
            message = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(message, dict) or message.get("table") != table:
            continue
        for row in message.get("data") or ():
            key = row.get("id") if isinstance(row, dict) else None
            if key is not None:
                found.setdefault(int(key), timestamp / 1000)
    return found


def stages_ms(committed: dict[int, float], kafka: dict[int, float], acked: dict[int, float],
              seen: dict[int, float]) -> dict[str, list[float]]:
    """Each row's stages (STAGES), in ms and sorted, from its own four times; a row missing
    either end of a stage is left out of it. Not clamped at 0, unlike the totals: a row's
    stages then add up to its total, and a slightly negative commit -> Kafka shows where two
    clocks meet (Kafka's timestamps are whole ms; the commit time is when the INSERT returned,
    which Canal can beat)."""
    ends = ((committed, kafka), (kafka, acked), (acked, seen))
    return {name: sorted((end[i] - at) * 1000 for i, at in start.items() if i in end)
            for name, (start, end) in zip(STAGES, ends, strict=True)}


async def start_at_end(group: str, topic: str) -> dict[TopicPartition, int]:
    """Commits `group`'s offsets at the topic's end: the child starts after what is there.
    Returns those offsets, where the run's records begin (read_back)."""
    kafka = KafkaSettings(bootstrap_servers=KAFKA, group_id=group)
    partitions = (await topic_partitions(kafka, [topic])).get(topic)
    if not partitions:
        raise RuntimeError(f"no topic {topic}: is Canal running? `stack/stack.sh status`")
    consumer = make_consumer(kafka)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in ends.items()})
        return ends
    finally:
        await consumer.stop()


async def read_back(table: str, starts: dict[TopicPartition, int],
                    limit: float = READ_BACK_SECONDS) -> dict[int, float]:
    """The Kafka timestamp (s) of each of `table`'s rows: the topic's records from `starts` to
    its end now, read without a group (nothing committed, nobody rebalanced). Gives up after
    `limit` s with what it has: the stages then leave the rest out."""
    consumer = make_consumer(KafkaSettings(bootstrap_servers=KAFKA), group_id=None)
    await consumer.start()
    records: list[tuple[bytes | None, int]] = []
    try:
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        ends = await consumer.end_offsets(list(starts))
        left = {tp for tp, offset in starts.items() if offset < ends[tp]}
        deadline = time.monotonic() + limit
        while left and time.monotonic() < deadline:
            batches = await consumer.getmany(*left, timeout_ms=1000)
            for batch in batches.values():
                records.extend((record.value, record.timestamp) for record in batch)
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return record_times(records, table)


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


def _slug(refresh: str) -> str:
    """The refresh as a part of a table and an index name (lower case, `_` for the rest)."""
    return re.sub(r"[^a-z0-9]+", "_", refresh.lower())


async def measure(
    stack: Stack, *, rate: float, seconds: float, es_pid: int | None,
    refresh: str = DEFAULT_REFRESH, wait: float = 120.0,
) -> Freshness:
    """Insert at `rate` rows/s for `seconds` into an index with `refresh` as refresh_interval;
    then wait at most `wait` s for the last rows."""
    slug = _slug(refresh)
    table = f"t_bench_fresh_{stack.run_id.replace('-', '_')}_{slug}"
    index = await stack.create_index(f"fresh-{slug}", mappings=MAPPING,
                                     settings=index_settings(refresh))
    group = stack.name(f"group-fresh-{slug}")
    connection = await mariadb.connect()
    tracker = Tracker()
    produced: dict[str, float] = {}
    kafka: dict[int, float] = {}
    run: RunResult | None = None
    try:
        await mariadb.execute(connection, f"CREATE TABLE {table} ({COLUMNS})")
        starts = await start_at_end(group, CANAL_TOPIC)

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

        run = await run_esupdater(stack, Variant(1), CANAL_TOPIC, len(starts), index=index,
                                  feed=feed, route=f"{MARIADB_DATABASE}.{table}", acks=True,
                                  es_pid=es_pid, group=group)
        try:
            kafka = await read_back(table, starts)
        except (KafkaError, OSError):  # the totals stand; stages with Kafka show 0 rows
            kafka = {}
    finally:
        dropped = len(tracker.seen) == len(tracker.committed)
        if dropped:  # every row was searchable, so read by Canal: the table can go
            await mariadb.execute(connection, f"DROP TABLE IF EXISTS {table}")
        connection.close()
        await stack.drop_index(index)
    latencies = tracker.latencies_ms()
    acks = run.acks if run else []
    acked = tracker.ack_latencies_ms(acks)
    return Freshness(
        table=table, rate=rate, produced_rate=produced.get("rate", 0.0), seconds=seconds,
        rows=len(tracker.committed), found=len(latencies),
        p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else math.nan,
        commit_ms=1000 * produced.get("commit", math.nan), dropped=dropped, run=run,
        ack_p50_ms=percentile(acked, 50), ack_p99_ms=percentile(acked, 99), refresh=refresh,
        stages=stages_ms(tracker.committed, kafka, acked_at(acks), tracker.seen),
    )
