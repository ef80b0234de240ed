"""The example shop in the local stack's MariaDB, for the README's backfill and verify steps.

`fill`: (re)creates `shop.users` and `shop.orders_0..3` (the tables handlers/shop.py follows)
and fills them with the binlog off for the session: the rows exist as in a database esupdater
meets for the first time, which Canal never streamed and only a backfill brings in. The
tables' DDL is binlogged (Canal keeps its table metadata from it); the example indices are
deleted, so each run starts from scratch.

`traffic`: the application going on: inserts, updates and deletes of users and orders through
the binlog, at a steady rate; then it waits until esupdater's group has handled all of it
(the last change is searchable and the group committed past everything Canal had published),
so that `esupdater verify` compares a settled index.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import orjson
import pymysql
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from tools.kafka_admin import group_call
from tools.local_stack import (
    ELASTICSEARCH,
    KAFKA,
    MARIADB,
    MARIADB_DATABASE,
    MARIADB_PASSWORD,
    MARIADB_USER,
)

ROOT = Path(__file__).resolve().parent.parent
#: The root account over the local server's socket (stack/mariadb.sh writes it): the only
#: one allowed to turn the binlog off for its session.
ROOT_CNF = ROOT / ".stack" / "mariadb" / "my.cnf"
SHARDS = [f"orders_{n}" for n in range(4)]
INDICES = ("shop-users", "shop-orders")  # handlers/shop.py
CANAL_TOPIC = "canal_shop"  # stack/canal.sh: flat messages of every shop table
CITIES = ["Paris", "Lyon", "Berlin", "Madrid", "Oslo", "Porto", "Rome", "Vienna", "Turin"]
NAMES = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia"]
NEXT_STATUS = {"created": ["paid", "paid", "paid", "cancelled"], "paid": ["shipped"],
               "shipped": ["delivered"]}
EPOCH = datetime(2025, 1, 1)
#: The user whose last change marks the end of the traffic.
MARKER_USER = 1

USERS = """CREATE TABLE users (
    id BIGINT UNSIGNED PRIMARY KEY, name VARCHAR(64) NOT NULL, email VARCHAR(128) NOT NULL,
    city VARCHAR(32), balance DECIMAL(12,2) NOT NULL, password_hash CHAR(60),
    created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL)"""
ORDERS = """CREATE TABLE {table} (
    id BIGINT UNSIGNED PRIMARY KEY, user_id BIGINT UNSIGNED NOT NULL,
    amount DECIMAL(10,2) NOT NULL, currency CHAR(3) NOT NULL, status VARCHAR(16) NOT NULL,
    created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL)"""


def sql_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def sql_row(values: tuple[Any, ...]) -> str:
    return "(" + ", ".join(sql_value(v) for v in values) + ")"


@dataclass
class Shop:
    """Rows as the application would write them; deterministic for a seed."""

    rng: random.Random
    clock: datetime = EPOCH
    users: int = 0
    orders: int = 0

    def tick(self) -> str:
        self.clock += timedelta(seconds=self.rng.randint(1, 90))
        return f"{self.clock:%Y-%m-%d %H:%M:%S}"

    def user(self) -> tuple[Any, ...]:
        self.users += 1
        now = self.tick()
        name = f"{self.rng.choice(NAMES)} {self.users}"
        return (self.users, name, f"user{self.users}@example.com", self.rng.choice(CITIES),
                f"{self.rng.randint(0, 500_000) / 100:.2f}", "$2b$12$" + "x" * 53, now, now)

    def order(self) -> tuple[str, tuple[Any, ...]]:
        self.orders += 1
        now = self.tick()
        return SHARDS[self.orders % len(SHARDS)], (
            self.orders, self.rng.randint(1, max(self.users, 1)),
            f"{self.rng.randint(100, 99_999) / 100:.2f}", "EUR", "created", now, now)


def root_connection() -> pymysql.connections.Connection:
    if not ROOT_CNF.is_file():
        sys.exit(f"{ROOT_CNF.relative_to(ROOT)} not found: run `make up` first")
    return pymysql.connect(read_default_file=str(ROOT_CNF), database=MARIADB_DATABASE,
                           autocommit=True, charset="utf8mb4")


def app_connection() -> pymysql.connections.Connection:
    host, port = MARIADB.rsplit(":", 1)
    return pymysql.connect(host=host, port=int(port), user=MARIADB_USER,
                           password=MARIADB_PASSWORD, database=MARIADB_DATABASE,
                           autocommit=True, charset="utf8mb4")


def insert_many(cursor: Any, table: str, rows: list[tuple[Any, ...]], batch: int = 1_000) -> None:
    for start in range(0, len(rows), batch):
        cursor.execute(f"INSERT INTO {table} VALUES "
                       + ", ".join(sql_row(row) for row in rows[start:start + batch]))


def delete_index(name: str) -> None:
    try:
        with urlopen(Request(f"{ELASTICSEARCH}/{name}", method="DELETE"), timeout=30):
            pass
    except HTTPError as exc:
        if exc.code != 404:
            raise


def fill(users: int, orders: int, seed: int) -> Shop:
    shop = Shop(random.Random(seed))
    connection = root_connection()
    try:
        with connection.cursor() as cursor:
            for table, ddl in [("users", USERS),
                               *((shard, ORDERS.format(table=shard)) for shard in SHARDS)]:
                cursor.execute(f"DROP TABLE IF EXISTS {table}")
                cursor.execute(ddl)
            cursor.execute("SET SESSION sql_log_bin = 0")  # the rows only: not in the binlog
            insert_many(cursor, "users", [shop.user() for _ in range(users)])
            by_shard: dict[str, list[tuple[Any, ...]]] = {shard: [] for shard in SHARDS}
            for _ in range(orders):
                shard, row = shop.order()
                by_shard[shard].append(row)
            for shard, rows in by_shard.items():
                insert_many(cursor, shard, rows)
    finally:
        connection.close()
    for index in INDICES:
        delete_index(index)
    return shop


@dataclass
class Traffic:
    """Statements an application sends, picked at random; counts what ran."""

    rng: random.Random
    cursor: Any
    ran: Counter[str] = field(default_factory=Counter)

    def one(self) -> None:
        kind = self.rng.choices(
            ["user_update", "user_insert", "user_delete", "order_insert", "order_advance",
             "order_delete"], weights=[5, 1, 1, 2, 6, 1])[0]
        getattr(self, kind)()
        self.ran[kind] += 1

    def _any_user(self) -> int:
        ((top,),) = self._query("SELECT COALESCE(MAX(id), 0) FROM users")
        return self.rng.randint(MARKER_USER + 1, max(int(top), MARKER_USER + 1))

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        self.cursor.execute(sql)
        return list(self.cursor.fetchall())

    def user_update(self) -> None:
        self.cursor.execute(
            f"UPDATE users SET city = {sql_value(self.rng.choice(CITIES))}, "
            f"balance = balance + {self.rng.randint(-500, 500) / 100:.2f}, updated_at = NOW() "
            f"WHERE id = {self._any_user()}")

    def user_insert(self) -> None:
        self.cursor.execute(
            "INSERT INTO users SELECT MAX(id) + 1, 'New user', CONCAT('new', MAX(id) + 1, "
            "'@example.com'), 'Oslo', 0.00, NULL, NOW(), NOW() FROM users")

    def user_delete(self) -> None:
        self.cursor.execute(f"DELETE FROM users WHERE id = {self._any_user()}")

    def order_insert(self) -> None:
        shard = self.rng.choice(SHARDS)
        ((top,),) = self._query(
            "SELECT GREATEST(" + ", ".join(f"(SELECT COALESCE(MAX(id), 0) FROM {s})"
                                           for s in SHARDS) + ")")
        self.cursor.execute(
            f"INSERT INTO {shard} VALUES ({int(top) + 1}, {self._any_user()}, "
            f"{self.rng.randint(100, 99_999) / 100:.2f}, 'EUR', 'created', NOW(), NOW())")

    def order_advance(self) -> None:
        shard = self.rng.choice(SHARDS)
        status = self.rng.choice(list(NEXT_STATUS))
        following = self.rng.choice(NEXT_STATUS[status])
        self.cursor.execute(
            f"UPDATE {shard} SET status = '{following}', updated_at = NOW() "
            f"WHERE status = '{status}' ORDER BY id LIMIT {self.rng.randint(1, 20)}")

    def order_delete(self) -> None:
        self.cursor.execute(
            f"DELETE FROM {self.rng.choice(SHARDS)} WHERE status = 'cancelled' LIMIT 5")


def traffic(seconds: float, rate: float, seed: int) -> tuple[Counter[str], str]:
    """Statements for `seconds` at `rate` per second; returns the counts and the marker, the
    city the last statement gives user MARKER_USER."""
    connection = app_connection()
    try:
        with connection.cursor() as cursor:
            run = Traffic(random.Random(seed), cursor)
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < seconds:
                run.one()
                ahead = sum(run.ran.values()) / rate - elapsed
                if ahead > 0:
                    time.sleep(ahead)
            marker = f"marker-{os.getpid()}-{time.time_ns()}"
            cursor.execute(f"UPDATE users SET city = '{marker}', updated_at = NOW() "
                           f"WHERE id = {MARKER_USER}")
            return run.ran, marker
    finally:
        connection.close()


def marker_city() -> str | None:
    try:
        with urlopen(f"{ELASTICSEARCH}/shop-users/_doc/{MARKER_USER}", timeout=10) as response:
            doc = orjson.loads(response.read())
    except HTTPError:
        return None
    city = doc.get("_source", {}).get("city")
    return None if city is None else str(city)


async def caught_up(group: str, marker: str, timeout: float) -> None:  # noqa: ASYNC109
    """Until the marker is in the index (so Canal published everything before it), then until
    `group` committed past everything on the topic at that moment."""
    deadline = time.monotonic() + timeout
    while marker_city() != marker:
        if time.monotonic() > deadline:
            sys.exit(f"the last change (user {MARKER_USER} city {marker}) did not reach "
                     f"{ELASTICSEARCH}/shop-users within {timeout:.0f} s: is `esupdater run` "
                     "following canal_shop?")
        await asyncio.sleep(0.5)
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA)
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await consumer.start()
    await admin.start()
    try:
        partitions = consumer.partitions_for_topic(CANAL_TOPIC) or set()
        tps = [TopicPartition(CANAL_TOPIC, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps)
        while True:
            committed = await group_call(
                lambda: admin.list_consumer_group_offsets(group, partitions=tps))
            if all(committed.get(tp) is not None and committed[tp].offset >= ends[tp]
                   for tp in tps):
                return
            if time.monotonic() > deadline:
                sys.exit(f"group {group!r} did not commit up to {CANAL_TOPIC}'s end within "
                         f"{timeout:.0f} s")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.shop_tables", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    filling = commands.add_parser("fill", help="recreate and fill the tables, off the binlog")
    filling.add_argument("--users", type=int, default=2_000)
    filling.add_argument("--orders", type=int, default=20_000)
    filling.add_argument("--seed", type=int, default=2026)
    going = commands.add_parser("traffic", help="writes through the binlog, then waits")
    going.add_argument("--seconds", type=float, default=30.0)
    going.add_argument("--rate", type=float, default=50.0, help="statements per second")
    going.add_argument("--seed", type=int, default=7)
    going.add_argument("--group", default=os.environ.get("ESUPDATER_KAFKA__GROUP_ID",
                                                         "esupdater"),
                       help="esupdater's consumer group (default: ESUPDATER_KAFKA__GROUP_ID, "
                       "else esupdater)")
    going.add_argument("--timeout", type=float, default=120.0,
                       help="seconds to wait for esupdater to catch up")
    args = parser.parse_args(argv)
    if args.command == "fill":
        shop = fill(args.users, args.orders, args.seed)
        print(f"shop.users: {shop.users:,} rows, shop.orders_0..3: {shop.orders:,} rows "
              "(written off the binlog: only a backfill brings them in); indices "
              f"{', '.join(INDICES)} deleted")
        return 0
    ran, marker = traffic(args.seconds, args.rate, args.seed)
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(ran.items()))
    print(f"traffic: {sum(ran.values()):,} statements ({kinds})")
    asyncio.run(caught_up(args.group, marker, args.timeout))
    print(f"esupdater (group {args.group}) has handled all of it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
