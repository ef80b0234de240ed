"""`make demo`: a shop's binlog through Kafka and `esupdater run` into Elasticsearch, verified.

Recreates the topic `shop-binlog` (4 partitions) and the shop indexes, produces a realistic
Canal flat stream (users inserted, updated and deleted; orders over the shards orders_0..3
moving through their statuses; an ALTER TABLE on one shard), then runs `esupdater run` with
the example handlers (handlers/shop.py) until the group has committed everything, shows
`esupdater status`, stops it with `esupdater stop` and compares every document in
Elasticsearch with the state the same handlers produce in memory (esupdater.testing).
Exit status 0 when they are equal.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_scan
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax

from esupdater.canal import flat_message
from esupdater.testing import MemorySink, apply, changes_from_canal
from tools.kafka_admin import group_call
from tools.local_stack import ELASTICSEARCH, KAFKA

ROOT = Path(__file__).resolve().parent.parent
TOPIC, GROUP, PARTITIONS = "shop-binlog", "esupdater-demo", 4
USERS_INDEX, ORDERS_INDEX = "shop-users", "shop-orders"  # as in handlers/shop.py
SEED = 2026  # the same stream on every run
ROUNDS, USERS_PER_ROUND, ORDERS_PER_ROUND = 20, 100, 1000
USER_UPDATES_PER_ROUND, USER_DELETES_PER_ROUND = 300, 5
ALTER_ROUND, ALTERED_SHARD = 10, "orders_2"
CATCH_UP_TIMEOUT_S = 120.0
TOPIC_WAIT_STEPS = 300  # of 0.1 s
NO_ERROR = 0  # Kafka's error code for success

USER_TYPES = {
    "id": "bigint(20) unsigned", "name": "varchar(64)", "email": "varchar(128)",
    "city": "varchar(32)", "balance": "decimal(12,2)", "password_hash": "char(60)",
    "created_at": "datetime", "updated_at": "datetime",
}  # fmt: skip
ORDER_TYPES = {
    "id": "bigint(20) unsigned", "user_id": "bigint(20) unsigned", "amount": "decimal(10,2)",
    "currency": "char(3)", "status": "varchar(16)", "created_at": "datetime",
    "updated_at": "datetime",
}  # fmt: skip
NOTE_TYPE = "varchar(255)"
CITIES = ["Paris", "Lyon", "Berlin", "Madrid", "Oslo", "Porto", "Rome", "Vienna", "Turin"]
NAMES = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia"]
NEXT_STATUS = {"created": ["paid"] * 9 + ["cancelled"], "paid": ["shipped"],
               "shipped": ["delivered"]}  # fmt: skip
NOTES = [None, None, None, "gift wrap", "leave at the door"]

Row = dict[str, str | None]


@dataclass
class Transaction:
    """One MySQL transaction on one table, as Canal reports it."""

    table: str
    type: str
    rows: list[Row]
    old: list[Row] | None = None
    sql: str = ""


@dataclass
class Shop:
    """The shop's tables while the stream is generated; emits its binlog transactions."""

    rng: random.Random
    clock: datetime = datetime(2026, 11, 2, 8, 0, 0)
    users: dict[int, Row] = field(default_factory=dict)
    orders: dict[int, tuple[str, Row]] = field(default_factory=dict)  # id -> (shard, row)
    altered: bool = False
    last_user: int = 0  # ids are never reused, as with AUTO_INCREMENT
    last_order: int = 0

    def tick(self) -> str:
        self.clock += timedelta(seconds=self.rng.randint(1, 30))
        return self.clock.strftime("%Y-%m-%d %H:%M:%S")

    def insert_users(self, count: int) -> Iterator[Transaction]:
        ids = list(range(self.last_user + 1, self.last_user + count + 1))
        self.last_user += count
        for chunk in self._chunks(ids, 25):
            rows = [self._new_user(user) for user in chunk]
            yield Transaction("users", "INSERT", rows)

    def _new_user(self, user: int) -> Row:
        name, now = f"{self.rng.choice(NAMES)} {user}", self.tick()
        row: Row = {
            "id": str(user), "name": name, "email": f"user{user}@example.com",
            "city": self.rng.choice(CITIES), "balance": f"{self.rng.randint(0, 50000) / 100:.2f}",
            "password_hash": "$2b$12$" + "x" * 53, "created_at": now, "updated_at": now,
        }  # fmt: skip
        self.users[user] = row
        return row

    def update_users(self, count: int) -> Iterator[Transaction]:
        chosen = self.rng.sample(sorted(self.users), min(count, len(self.users)))
        for chunk in self._chunks(chosen, 20):
            olds, rows = [], []
            for user in chunk:
                before = self.users[user]
                after = dict(before, updated_at=self.tick())
                for column in self.rng.sample(["city", "balance", "email", "name"], 2):
                    after[column] = self._new_value(user, column)
                olds.append({k: before[k] for k in after if after[k] != before[k]})
                rows.append(after)
                self.users[user] = after
            yield Transaction("users", "UPDATE", rows, olds)

    def _new_value(self, user: int, column: str) -> str:
        if column == "city":
            return self.rng.choice(CITIES)
        if column == "balance":
            return f"{self.rng.randint(0, 50000) / 100:.2f}"
        if column == "email":
            return f"user{user}.{self.rng.randint(1, 99)}@example.org"
        return f"{self.rng.choice(NAMES)} {user}"

    def delete_users(self, count: int) -> Iterator[Transaction]:
        gone = self.rng.sample(sorted(self.users), min(count, len(self.users)))
        yield Transaction("users", "DELETE", [self.users.pop(user) for user in gone])

    def insert_orders(self, count: int) -> Iterator[Transaction]:
        ids = list(range(self.last_order + 1, self.last_order + count + 1))
        self.last_order += count
        for chunk in self._chunks(ids, 30):
            shard = f"orders_{self.rng.randrange(4)}"  # one transaction writes one shard
            yield Transaction(shard, "INSERT", [self._new_order(order, shard) for order in chunk])

    def _new_order(self, order: int, shard: str) -> Row:
        now = self.tick()
        row: Row = {
            "id": str(order), "user_id": str(self.rng.choice(list(self.users))),
            "amount": f"{self.rng.randint(100, 99999) / 100:.2f}", "currency": "EUR",
            "status": "created", "created_at": now, "updated_at": now,
        }  # fmt: skip
        if self.altered and shard == ALTERED_SHARD:
            row["note"] = self.rng.choice(NOTES)
        self.orders[order] = (shard, row)
        return row

    def advance_orders(self, probability: float) -> Iterator[Transaction]:
        """A batch job per shard: `UPDATE orders_N SET status = ... WHERE ...`."""
        by_shard: dict[str, list[int]] = {}
        for order, (shard, row) in self.orders.items():
            if row["status"] in NEXT_STATUS and self.rng.random() < probability:
                by_shard.setdefault(shard, []).append(order)
        for shard, orders in sorted(by_shard.items()):
            for chunk in self._chunks(orders, 100):
                olds, rows = [], []
                for order in chunk:
                    before = self.orders[order][1]
                    status = self.rng.choice(NEXT_STATUS[str(before["status"])])
                    after = dict(before, status=status, updated_at=self.tick())
                    if self.altered and shard == ALTERED_SHARD:
                        after.setdefault("note", None)  # the new column, NULL in old rows
                    olds.append({"status": before["status"], "updated_at": before["updated_at"]})
                    rows.append(after)
                    self.orders[order] = (shard, after)
                yield Transaction(shard, "UPDATE", rows, olds)

    def purge_cancelled(self, count: int) -> Iterator[Transaction]:
        cancelled = [o for o, (s, r) in self.orders.items()
                     if s == "orders_1" and r["status"] == "cancelled"][:count]  # fmt: skip
        if cancelled:
            yield Transaction("orders_1", "DELETE", [self.orders.pop(o)[1] for o in cancelled])

    def alter(self) -> Iterator[Transaction]:
        self.altered = True
        sql = f"ALTER TABLE `{ALTERED_SHARD}` ADD COLUMN `note` {NOTE_TYPE} NULL"
        yield Transaction(ALTERED_SHARD, "ALTER", [], sql=sql)

    def _chunks(self, items: list[int], most: int) -> Iterator[list[int]]:
        """Transactions of varied sizes, as applications write them."""
        while items:
            size = self.rng.randint(1, most)
            yield items[:size]
            items = items[size:]


def binlog(shop: Shop) -> Iterator[Transaction]:
    """The whole stream, round by round: new users and orders, updates, deletes, one DDL."""
    for round_ in range(ROUNDS):
        yield from shop.insert_users(USERS_PER_ROUND)
        yield from shop.insert_orders(ORDERS_PER_ROUND)
        yield from shop.update_users(USER_UPDATES_PER_ROUND)
        yield from shop.advance_orders(0.3)
        yield from shop.delete_users(USER_DELETES_PER_ROUND)
        if round_ == ALTER_ROUND:
            yield from shop.alter()
        if round_ % 5 == 4:
            yield from shop.purge_cancelled(20)
    yield from shop.advance_orders(0.5)


def java_hash(text: str) -> int:
    """Java's String.hashCode, which Canal's partitionHash applies to the primary key."""
    h = 0
    for char in text:
        h = (31 * h + ord(char)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def messages(txn: Transaction, shop: Shop) -> Iterator[tuple[int, bytes]]:
    """(partition, Canal flat message) for one transaction, split by partitionHash on `id`.

    Canal splits a multi-row message so that each partition gets the rows hashed to it, in
    order: all changes of one row stay in one partition. DDL goes to partition 0.
    """
    es_ms = int(shop.clock.timestamp() * 1000)
    if txn.type == "ALTER":
        yield 0, flat_message("shop", txn.table, "ALTER", [], mysql_types={}, is_ddl=True,
                              sql=txn.sql, es_ms=es_ms)  # fmt: skip
        return
    types = dict(USER_TYPES if txn.table == "users" else ORDER_TYPES)
    if "note" in txn.rows[0]:
        types["note"] = NOTE_TYPE
    parts: dict[int, list[int]] = {}
    for index, row in enumerate(txn.rows):
        parts.setdefault(abs(java_hash(str(row["id"]))) % PARTITIONS, []).append(index)
    for partition, indexes in sorted(parts.items()):
        old = [txn.old[i] for i in indexes] if txn.old else None
        rows = [txn.rows[i] for i in indexes]
        yield partition, flat_message("shop", txn.table, txn.type, rows, old=old,
                                      mysql_types=types, es_ms=es_ms)  # fmt: skip


@dataclass
class Produced:
    """What was sent, and the documents the handlers make of it (computed in memory)."""

    expected: MemorySink
    rows: int = 0
    records: int = 0
    ends: dict[int, int] = field(default_factory=dict)  # partition -> end offset


async def produce() -> Produced:
    """Send the stream; meanwhile apply it with the same handlers to a MemorySink."""
    importlib.import_module("handlers.shop")  # registers the example handlers
    produced = Produced(MemorySink())
    shop = Shop(random.Random(SEED))
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, linger_ms=10, max_batch_size=1 << 18)
    await producer.start()
    try:
        sent = []
        for txn in binlog(shop):
            for partition, value in messages(txn, shop):
                sent.append(await producer.send(TOPIC, value, partition=partition))
                await apply(changes_from_canal(value, TOPIC, partition), sink=produced.expected)
                produced.records += 1
            produced.rows += len(txn.rows) or 1
        for metadata in await asyncio.gather(*sent):
            end = metadata.offset + 1  # Kafka's end offset is the next one
            produced.ends[metadata.partition] = max(produced.ends.get(metadata.partition, 0), end)
    finally:
        await producer.stop()
    return produced


async def reset(admin: AIOKafkaAdminClient, es: AsyncElasticsearch) -> None:
    """A fresh topic (deleted and recreated: that also drops the group's old offsets)."""
    if TOPIC in await admin.list_topics():
        await admin.delete_topics([TOPIC])
        await until(admin, lambda topics: TOPIC not in topics, "deleted")
    response = await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    for topic, code, message in response.topic_errors:
        if code != NO_ERROR:
            raise SystemExit(f"cannot create topic {topic} in Kafka at {KAFKA}: {message}")
    await until(admin, lambda topics: TOPIC in topics, "created")
    await es.indices.delete(index=[USERS_INDEX, ORDERS_INDEX], ignore_unavailable=True)


async def until(
    admin: AIOKafkaAdminClient, done: Callable[[set[str]], bool], what: str
) -> None:
    """Topic deletion and creation complete after the broker's answer: wait for them."""
    for _ in range(TOPIC_WAIT_STEPS):
        if done(set(await admin.list_topics())):
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"topic {TOPIC} was not {what} in Kafka at {KAFKA} in time")


def settings_toml(runtime: Path) -> str:
    return f"""\
[kafka]
bootstrap_servers = "{KAFKA}"
topics = ["{TOPIC}"]
group_id = "{GROUP}"

[elasticsearch]
hosts = ["{ELASTICSEARCH}"]

[runtime]
dir = "{runtime}"

[handlers]
package = "handlers"
"""


def esupdater(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("esupdater")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "esupdater", *args]


def child_env() -> dict[str, str]:
    """The demo's settings.toml decides; the repository makes `handlers` importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESUPDATER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


async def committed(admin: AIOKafkaAdminClient) -> int:
    offsets = await group_call(lambda: admin.list_consumer_group_offsets(GROUP))
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == TOPIC)


async def count(es: AsyncElasticsearch, index: str) -> int:
    """Documents in `index` so far: 0 while it does not exist, and while it is only being
    created (its first write made it; a count then meets its unstarted shard: 503)."""
    response = await es.options(ignore_status=(404, 503)).count(index=index)
    return int(response.get("count", 0))


async def follow(
    console: Console, admin: AIOKafkaAdminClient, es: AsyncElasticsearch, produced: Produced,
    child: asyncio.subprocess.Process,
) -> bool:
    """A live line of documents arriving until the group has committed every record."""
    want = produced.expected.documents
    total = sum(produced.ends.values())
    columns = (TextColumn("{task.description:>22}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    with Progress(*columns, console=console) as progress:
        users = progress.add_task(f"{USERS_INDEX} docs", total=len(want[USERS_INDEX]))
        orders = progress.add_task(f"{ORDERS_INDEX} docs", total=len(want[ORDERS_INDEX]))
        records = progress.add_task("Kafka records committed", total=total)
        while child.returncode is None and time.monotonic() < deadline:
            done = await committed(admin)
            if done >= total:  # committed means acknowledged: make it all visible to _count
                await es.indices.refresh(index=[USERS_INDEX, ORDERS_INDEX])
            progress.update(users, completed=await count(es, USERS_INDEX))
            progress.update(orders, completed=await count(es, ORDERS_INDEX))
            progress.update(records, completed=done)
            if done >= total:
                return True
            await asyncio.sleep(0.5)
    return False


async def verify(es: AsyncElasticsearch, expected: MemorySink) -> list[str]:
    """Every document in both indexes against the expected state; what differs, if anything."""
    problems = []
    for index, want in expected.documents.items():
        await es.indices.refresh(index=index)
        got = {hit["_id"]: hit["_source"] async for hit in async_scan(es, index=index, size=2000)}
        if len(got) != len(want):
            problems.append(f"{index}: {len(got):,} documents, expected {len(want):,}")
        for doc_id in sorted(set(want) | set(got), key=int):
            if got.get(doc_id) != want.get(doc_id):
                problems.append(f"{index}/{doc_id}: got {got.get(doc_id)}, want {want.get(doc_id)}")
    return problems


async def show_samples(console: Console, es: AsyncElasticsearch, shop_rows: Produced) -> None:
    """A user, an order from the altered shard, and a deleted user, as Elasticsearch has them."""
    orders = shop_rows.expected.documents[ORDERS_INDEX]
    users = shop_rows.expected.documents[USERS_INDEX]
    noted = next(i for i, doc in orders.items() if doc.get("note"))
    deleted = next(str(i) for i in range(1, len(users) * 2) if str(i) not in users)
    for index, doc_id in ((USERS_INDEX, min(users, key=int)), (ORDERS_INDEX, noted)):
        doc = await es.get(index=index, id=doc_id)
        text = json.dumps(doc["_source"], indent=2, ensure_ascii=False)
        syntax = Syntax(text, "json", background_color="default")
        console.print(Panel(syntax, title=f"{index}/{doc_id}", title_align="left", expand=False))
    gone = await es.options(ignore_status=404).get(index=USERS_INDEX, id=deleted)
    console.print(f"{USERS_INDEX}/{deleted} (deleted in MySQL): found={gone.get('found')}")


async def run_cli(console: Console, work: Path, *args: str) -> int:
    """Run one esupdater command in the demo's directory and show what it prints."""
    console.print(f"[bold]$ esupdater {' '.join(args)}[/bold]")
    command = await asyncio.create_subprocess_exec(
        *esupdater(*args), cwd=work, env=child_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await command.communicate()
    console.print(output.decode().rstrip(), highlight=False, markup=False)
    return await command.wait()


async def main() -> int:
    console = Console()
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    es = AsyncElasticsearch(ELASTICSEARCH, request_timeout=60)
    await admin.start()
    try:
        return await demo(console, admin, es)
    finally:
        await admin.close()
        await es.close()


async def demo(console: Console, admin: AIOKafkaAdminClient, es: AsyncElasticsearch) -> int:
    await reset(admin, es)
    if await committed(admin):
        raise SystemExit(f"group {GROUP} kept offsets of the deleted {TOPIC}: run the demo again")
    started = time.monotonic()
    produced = await produce()
    docs = {index: len(d) for index, d in produced.expected.documents.items()}
    console.print(
        f"produced {produced.rows:,} row changes in {produced.records:,} Canal messages "
        f"({TOPIC}, {PARTITIONS} partitions) in {time.monotonic() - started:.1f}s\n"
        f"expecting {docs[USERS_INDEX]:,} users and {docs[ORDERS_INDEX]:,} orders"
    )
    work = Path(tempfile.mkdtemp(prefix="esupdater-demo-"))
    (work / "settings.toml").write_text(settings_toml(work / "runtime"))
    console.print(f"[bold]$ esupdater run[/bold]  (in {work}; its log is kept there on failure)")
    with (work / "esupdater.log").open("wb") as log:
        child = await asyncio.create_subprocess_exec(
            *esupdater("run"), cwd=work, env=child_env(), stdout=log,
            stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    began = time.monotonic()
    try:
        caught_up = await follow(console, admin, es, produced, child)
        seconds = time.monotonic() - began
        if caught_up:
            await run_cli(console, work, "status")
            console.print("(unrouted 1: the ALTER TABLE, which no handler asks for)")
        stopped = await run_cli(console, work, "stop") == 0
        stopped = await asyncio.wait_for(child.wait(), 60) == 0 and stopped
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    if not caught_up or not stopped:
        tail = (work / "esupdater.log").read_text().splitlines()[-20:]
        console.print("\n".join(tail), markup=False, highlight=False)
        console.print(f"[red]✗ esupdater did not {'stop' if caught_up else 'catch up'}[/red]")
        return 1
    problems = await verify(es, produced.expected)
    await show_samples(console, es, produced)
    status = verdict(console, problems, produced, docs, seconds)
    if status == 0:
        shutil.rmtree(work, ignore_errors=True)
    return status


def verdict(
    console: Console, problems: list[str], produced: Produced, docs: dict[str, int], s: float
) -> int:
    if problems:
        for problem in problems[:10]:
            console.print(problem, markup=False)
        console.print(f"[red]✗ {len(problems):,} difference(s) between Elasticsearch and the "
                      "binlog[/red]")  # fmt: skip
        return 1
    console.print(
        f"[green]✓ Elasticsearch equals the binlog: {docs[USERS_INDEX]:,} users and "
        f"{docs[ORDERS_INDEX]:,} orders, every document checked; {produced.rows:,} row changes "
        f"applied in {s:.1f}s ({produced.rows / s:,.0f} rows/s)[/green]"
    )
    return 0


if __name__ == "__main__":  # python -m tools.demo, from the repository (handlers/ is there)
    sys.exit(asyncio.run(main()))
