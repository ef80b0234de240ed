"""The benchmark's data: the shop's `users` table as Canal flat messages.

A deterministic stream of statements (INSERTs of new users, UPDATEs of existing ones, a few
DELETEs), each touching `rows_per_statement` users of one partition, like Canal with
`partitionHash` on the primary key. The same statements give the 1-row topic (one message
per row) and the 10-row topic (one message per statement): the same rows, in the same order
per key.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from esupdater.canal import flat_message
from tools.local_stack import KAFKA

DATABASE, TABLE = "shop", "users"
MYSQL_TYPES = {
    "id": "bigint(20)",
    "name": "varchar(64)",
    "email": "varchar(128)",
    "city": "varchar(32)",
    "balance": "decimal(12,2)",
    "created_at": "datetime",
    "updated_at": "datetime",
    "vip": "tinyint(1)",
}
CITIES = ("Paris", "Lyon", "Berlin", "Madrid", "Oslo", "Porto", "Rome", "Vienna", "Ghent")
#: Each user is inserted once and then updated about three times on average.
ROWS_PER_USER = 4
DELETE_SHARE = 0.01
EPOCH_2024 = 1_704_067_200

Row = dict[str, str | None]


@dataclass(frozen=True, slots=True)
class Statement:
    partition: int
    type: str
    rows: list[Row]
    old: list[Row] | None


@dataclass
class Census:
    """What a dataset holds, for checks and the report."""

    rows: int = 0
    statements: int = 0
    inserts: int = 0
    updates: int = 0
    deletes: int = 0

    @property
    def live_documents(self) -> int:
        return self.inserts - self.deletes


def _stamp(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(EPOCH_2024 + seconds))


def user_row(uid: int, version: int) -> Row:
    return {
        "id": str(uid),
        "name": f"User {uid}",
        "email": f"user{uid}@example.com",
        "city": CITIES[(uid + version) % len(CITIES)],
        "balance": f"{(uid * 37 + version * 1013) % 100_000}.{(uid + version) % 100:02d}",
        "created_at": _stamp(uid * 60),
        "updated_at": _stamp(uid * 60 + version * 3_600),
        "vip": "1" if (uid + version) % 5 == 0 else "0",
    }


def statements(
    rows: int, *, partitions: int, rows_per_statement: int = 10, seed: int = 20_241_126,
    census: Census | None = None,
) -> Iterator[Statement]:
    """`rows` row changes of the users table, grouped into one-partition statements."""
    rng = random.Random(seed)
    census = census if census is not None else Census()
    live: list[list[int]] = [[] for _ in range(partitions)]
    version: dict[int, int] = {}
    next_k = [1] * partitions
    while census.rows < rows:
        p = rng.randrange(partitions)
        n = min(rows_per_statement, rows - census.rows)
        pool = live[p]
        remaining_inserts = rows // ROWS_PER_USER - census.inserts
        insert = len(pool) < n or rng.random() < remaining_inserts / max(rows - census.rows, 1)
        if insert:
            ids = [(next_k[p] + i) * partitions + p for i in range(n)]
            next_k[p] += n
            pool.extend(ids)
            for uid in ids:
                version[uid] = 0
            statement = Statement(p, "INSERT", [user_row(uid, 0) for uid in ids], None)
            census.inserts += n
        elif rng.random() < DELETE_SHARE:
            ids = [_take(pool, rng) for _ in range(n)]
            statement = Statement(p, "DELETE", [user_row(u, version.pop(u)) for u in ids], None)
            census.deletes += n
        else:
            ids = rng.sample(pool, n)
            new, old = [], []
            for uid in ids:
                before = user_row(uid, version[uid])
                version[uid] += 1
                after = user_row(uid, version[uid])
                new.append(after)
                old.append({k: v for k, v in before.items() if after[k] != v})
            statement = Statement(p, "UPDATE", new, old)
            census.updates += n
        census.rows += n
        census.statements += 1
        yield statement


def _take(pool: list[int], rng: random.Random) -> int:
    """Remove and return a random element in O(1) (order of the pool does not matter)."""
    i = rng.randrange(len(pool))
    pool[i], pool[-1] = pool[-1], pool[i]
    return pool.pop()


def messages(
    source: Iterator[Statement], rows_per_message: int
) -> Iterator[tuple[int, bytes, int]]:
    """(partition, Canal flat message, rows) for each statement, or for each row of it."""
    for statement in source:
        yield from encode(statement, rows_per_message)


def encode(
    st: Statement, rows_per_message: int, es_ms: int | None = None
) -> Iterator[tuple[int, bytes, int]]:
    """One statement as Canal messages: all rows in one, or one message per row."""
    if rows_per_message == 1:
        for i, row in enumerate(st.rows):
            old = [st.old[i]] if st.old is not None else None
            value = flat_message(DATABASE, TABLE, st.type, [row], old=old,
                                 mysql_types=MYSQL_TYPES, es_ms=es_ms)
            yield st.partition, value, 1
    else:
        value = flat_message(DATABASE, TABLE, st.type, st.rows, old=st.old,
                             mysql_types=MYSQL_TYPES, es_ms=es_ms)
        yield st.partition, value, len(st.rows)


async def produce_backlog(
    topic: str, rows: int, *, partitions: int, rows_per_message: int
) -> tuple[Census, float]:
    """Write the whole dataset into `topic` as fast as Kafka takes it; (census, seconds)."""
    census = Census()
    producer = AIOKafkaProducer(
        bootstrap_servers=KAFKA, acks=1, linger_ms=20, max_batch_size=1 << 20,
        max_request_size=8 << 20,
    )
    await producer.start()
    started = time.monotonic()
    try:
        batches = {p: producer.create_batch() for p in range(partitions)}
        pending: list[asyncio.Future[object]] = []
        source = statements(rows, partitions=partitions, census=census)
        for partition, value, _ in messages(source, rows_per_message):
            batch = batches[partition]
            if batch.append(key=None, value=value, timestamp=None) is None:
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=None, value=value, timestamp=None)
        for partition, batch in batches.items():
            if batch.record_count():
                pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return census, time.monotonic() - started
