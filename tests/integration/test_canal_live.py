"""The real end-to-end path: rows written to MariaDB, read from its binlog by Canal, published to
Kafka, applied by `esupdater run` to Elasticsearch.

Needs the whole local stack (`make up`): stack/canal.sh runs Canal with two destinations on
the `shop` database, flat JSON to CANAL_TOPIC (partitioned by primary key) and protobuf to
CANAL_PB_TOPIC. Each test writes to a table of its own and routes only that table, so tests
and earlier runs sharing those topics never meet.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import pymysql
import pytest
from elasticsearch import AsyncElasticsearch, NotFoundError

from tests.integration.conftest import TableFactory, connect_mariadb
from tests.integration.service_harness import (
    Service,
    ServiceFactory,
    committed_and_end,
    eventually,
    settled,
    stack,
    wait_count,
)

#: The topics stack/canal.sh configures Canal to publish to.
CANAL_TOPIC = "canal_shop"
CANAL_PB_TOPIC = "canal_shop_pb"
#: Seconds for a change to travel MariaDB -> Canal -> Kafka -> esupdater -> Elasticsearch,
#: including esupdater reading the topics' earlier history (other tables) first.
ARRIVAL_TIMEOUT = 90.0
#: What a change that never arrives most often means.
NOT_ARRIVED = "is Canal following MariaDB? `stack/stack.sh status`, .stack/logs/canal.log"

def params_for(table: str, topic: str = CANAL_TOPIC) -> dict[str, object]:
    """What the canal_* handler modules read: the table they route, and `one_partition`, true
    on the one-partition protobuf topic (the flat one hashes rows by primary key over 3)."""
    return {"table": table, "one_partition": topic == CANAL_PB_TOPIC}


async def following(
    new_service: ServiceFactory, handlers: str, table: str, topic: str = CANAL_TOPIC
) -> Service:
    """A started esupdater on one of Canal's topics, routing only `table` to `handlers`."""
    service = await new_service(handlers, params=params_for(table, topic), create_topic=False,
                                settings={"kafka": {"topics": [topic]}})
    return await service.started()


def execute(mariadb: pymysql.connections.Connection, *statements: str) -> None:
    with mariadb.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def table_rows(mariadb: pymysql.connections.Connection, table: str) -> dict[str, dict[str, Any]]:
    """The table as the mirror should have it in Elasticsearch: by id, values as JSON has them.

    DECIMAL becomes a JSON number, DATETIME(3) an ISO string with milliseconds (docs/types.md).
    """

    def as_json(value: Any) -> Any:
        if isinstance(value, Decimal):
            return float(value)
        if isinstance(value, datetime):
            return value.isoformat(timespec="milliseconds")
        return value

    with mariadb.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")
        return {str(row["id"]): {k: as_json(v) for k, v in row.items()}
                for row in cursor.fetchall()}


async def documents(es: AsyncElasticsearch, index: str) -> dict[str, dict[str, Any]]:
    """Every document of `index` by id (refreshed first); {} while the index does not exist."""

    async def search() -> dict[str, dict[str, Any]]:
        await es.indices.refresh(index=index)
        found = await es.search(index=index, size=10_000, query={"match_all": {}})
        return {hit["_id"]: hit["_source"] for hit in found["hits"]["hits"]}

    try:
        return await settled(search)
    except NotFoundError:
        return {}


async def wait_mirrored(
    es: AsyncElasticsearch, mariadb: pymysql.connections.Connection, table: str,
    service: Service,
) -> None:
    """Wait until the service's index holds exactly the table's rows; fail showing the diff."""

    async def equal() -> bool:
        return await documents(es, service.index) == table_rows(mariadb, table)

    try:
        await eventually(equal, timeout=ARRIVAL_TIMEOUT, service=service,
                         what=f"Elasticsearch index {service.index} equal to table {table}")
    except AssertionError as exc:
        docs, rows = await documents(es, service.index), table_rows(mariadb, table)
        differ = {id_: (docs.get(id_), rows.get(id_))
                  for id_ in sorted(set(docs) | set(rows)) if docs.get(id_) != rows.get(id_)}
        raise AssertionError(
            f"{exc}\n(document, row) where they differ: {differ}\n{NOT_ARRIVED}") from None


async def wait_changes(es: AsyncElasticsearch, service: Service, count: int) -> None:
    """Wait until the canal_log handler has written `count` documents, one per change."""
    try:
        await wait_count(es, service.index, count, timeout=ARRIVAL_TIMEOUT, service=service)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{NOT_ARRIVED}") from None


ORDERS = """
    id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL, price DECIMAL(10,2) NOT NULL,
    qty INT NOT NULL, note VARCHAR(255) NULL, updated_at DATETIME(3) NOT NULL
"""


@pytest.mark.parametrize("topic", [CANAL_TOPIC, CANAL_PB_TOPIC], ids=["flat", "protobuf"])
async def test_inserts_updates_and_deletes_in_mariadb_leave_elasticsearch_equal_to_the_table(
    topic: str, new_service: ServiceFactory, es: AsyncElasticsearch,
    mariadb: pymysql.connections.Connection, new_table: TableFactory,
) -> None:
    table = new_table(ORDERS)
    service = await following(new_service, "canal_mirror", table, topic)

    execute(mariadb, f"INSERT INTO {table} VALUES (1, 'one', 9.99, 1, NULL, NOW(3))")
    values = ", ".join(f"({i}, 'row {i}', {i}.25, {i}, 'n{i}', '2024-03-01 12:00:0{i % 10}.5')"
                       for i in range(2, 31))
    execute(
        mariadb,
        f"INSERT INTO {table} VALUES {values}",  # one statement, 29 rows
        f"UPDATE {table} SET price = 1234.50, note = NULL WHERE id = 2",
        f"UPDATE {table} SET qty = qty + 100, note = 'bulk' WHERE id BETWEEN 5 AND 15",
        f"DELETE FROM {table} WHERE id = 1",
        f"DELETE FROM {table} WHERE id > 25",  # one statement, 5 rows
    )
    mariadb.begin()  # several statements in one transaction
    execute(mariadb, f"INSERT INTO {table} VALUES (40, 'tx', 0.01, 7, 'in a transaction', NOW(3))",
            f"UPDATE {table} SET name = 'renamed' WHERE id IN (3, 40)",
            f"DELETE FROM {table} WHERE id = 4")
    mariadb.commit()

    await wait_mirrored(es, mariadb, table, service)
    assert len(table_rows(mariadb, table)) == 24  # 30 inserted, 1 + 5 deleted, 1 added, 1 deleted

    # A new primary key: the old document must go. (Once the row's earlier changes are in:
    # Canal hashes the new key, maybe to another partition, and across partitions no
    # consumer knows the order; README, "Writing a handler".)
    execute(mariadb, f"UPDATE {table} SET id = 500 WHERE id = 6")
    await wait_mirrored(es, mariadb, table, service)
    assert "500" in table_rows(mariadb, table)


async def test_a_row_updated_many_times_ends_with_its_last_values(
    new_service: ServiceFactory, es: AsyncElasticsearch,
    mariadb: pymysql.connections.Connection, new_table: TableFactory,
) -> None:
    table = new_table("id INT PRIMARY KEY, counter INT NOT NULL, label VARCHAR(32) NOT NULL")
    service = await following(new_service, "canal_mirror", table)
    execute(mariadb, f"INSERT INTO {table} VALUES (1, 0, 'start'), (2, 0, 'other')")

    for i in range(1, 151):  # 150 binlog transactions on one row, another row in between
        execute(mariadb, f"UPDATE {table} SET counter = {i}, label = 'step {i}' WHERE id = 1")
        if i % 10 == 0:
            execute(mariadb, f"UPDATE {table} SET counter = counter + 1 WHERE id = 2")

    await wait_mirrored(es, mariadb, table, service)
    docs = await documents(es, service.index)
    assert docs["1"] == {"id": 1, "counter": 150, "label": "step 150"}
    assert docs["2"]["counter"] == 15


async def test_canal_keeps_each_row_on_one_partition_and_spreads_rows_over_several(
    new_service: ServiceFactory, es: AsyncElasticsearch,
    mariadb: pymysql.connections.Connection, new_table: TableFactory,
) -> None:
    table = new_table("id INT PRIMARY KEY, v INT NOT NULL")
    service = await following(new_service, "canal_log", table)
    rows = 40
    execute(mariadb,
            f"INSERT INTO {table} VALUES " + ", ".join(f"({i}, 0)" for i in range(rows)),
            f"UPDATE {table} SET v = v + 1",
            f"UPDATE {table} SET v = v + 1 WHERE id % 2 = 0")

    changes = rows + rows + rows // 2
    await wait_changes(es, service, changes)
    logged = list((await documents(es, service.index)).values())
    partitions_of: dict[str, set[int]] = {}
    for change in logged:
        partitions_of.setdefault(change["pk"], set()).add(change["partition"])
    assert len(partitions_of) == rows
    assert all(len(found) == 1 for found in partitions_of.values()), partitions_of
    assert len({p for found in partitions_of.values() for p in found}) > 1
    assert sorted(c["type"] for c in logged).count("UPDATE") == rows + rows // 2
    assert {tuple(c["pk_names"]) for c in logged} == {("id",)}


TYPED = """
    id INT PRIMARY KEY, i INT, big BIGINT UNSIGNED, price DECIMAL(12,4), ratio DOUBLE,
    happened DATETIME(6), day DATE, stamp TIMESTAMP NULL, nothing VARCHAR(8) NULL,
    doc JSON, flag TINYINT(1), size ENUM('s','m','l'), tags SET('a','b','c'), txt VARCHAR(32),
    yr YEAR
"""


@pytest.mark.parametrize("topic", [CANAL_TOPIC, CANAL_PB_TOPIC], ids=["flat", "protobuf"])
async def test_values_from_mariadb_reach_handlers_typed_as_documented(
    topic: str, new_service: ServiceFactory, es: AsyncElasticsearch,
    mariadb: pymysql.connections.Connection, new_table: TableFactory,
) -> None:
    table = new_table(TYPED)
    service = await following(new_service, "canal_log", table, topic)
    execute(mariadb, f"""
        INSERT INTO {table} VALUES (
            1, -42, 18446744073709551615, 1234.5000, 0.25,
            '2024-03-01 12:30:45.123456', '2024-02-29', '2024-03-01 10:00:00', NULL,
            '{{"a": [1, 2], "b": null}}', 1, 'm', 'a,c', 'Zoë ☕ 🚀', 2024)
    """)

    await wait_changes(es, service, 1)
    (logged,) = (await documents(es, service.index)).values()
    types, strs = logged["types"], logged["strs"]
    assert types == {
        "id": "int", "i": "int", "big": "int", "price": "Decimal", "ratio": "float",
        "happened": "str", "day": "str", "stamp": "str", "nothing": "NoneType",
        # MariaDB's JSON is LONGTEXT with a json_valid check: Canal reports `longtext`, so
        # the handler gets the text (MySQL's own json type would arrive parsed).
        "doc": "str",
        "flag": "int", "size": "str", "tags": "list", "txt": "str", "yr": "int",
    }
    assert strs["i"] == "-42"
    assert strs["big"] == "18446744073709551615"
    assert Decimal(strs["price"]) == Decimal("1234.5")
    assert strs["ratio"] == "0.25"
    assert strs["happened"] == "2024-03-01T12:30:45.123456"
    assert strs["day"] == "2024-02-29"
    assert strs["stamp"] == "2024-03-01T10:00:00"  # written and read in UTC
    assert strs["nothing"] is None
    assert json.loads(strs["doc"]) == {"a": [1, 2], "b": None}
    assert strs["flag"] == "1"
    assert strs["size"] == "m"  # the label, from Canal's enum index
    assert strs["tags"] == "['a', 'c']"  # the members, from Canal's bitmask
    assert strs["txt"] == "Zoë ☕ 🚀"
    assert strs["yr"] == "2024"


def random_traffic(table: str, statements: int, seed: int) -> int:
    """Inserts, updates and deletes on 100 ids, some in multi-statement transactions, spread
    over a few seconds; returns how many statements ran. Runs in a thread (PyMySQL blocks)."""
    rng = random.Random(seed)
    connection = connect_mariadb()
    ran = 0
    try:
        while ran < statements:
            in_transaction = rng.random() < 0.2
            if in_transaction:
                connection.begin()
            for _ in range(rng.randint(2, 6) if in_transaction else 1):
                id_, v = rng.randrange(100), rng.randrange(1_000_000)
                statement = rng.choices([
                    f"INSERT INTO {table} VALUES ({id_}, {v}, 'i{v}') "
                    f"ON DUPLICATE KEY UPDATE v = {v}, label = 'u{v}'",
                    f"UPDATE {table} SET v = v + 1, label = 'p{v}' WHERE id = {id_}",
                    f"UPDATE {table} SET v = {v} WHERE id BETWEEN {id_} AND {id_ + 3}",
                    f"DELETE FROM {table} WHERE id = {id_}",
                ], weights=[5, 4, 1, 2])[0]
                execute(connection, statement)
                ran += 1
            if in_transaction:
                connection.commit()
            if ran % 50 == 0:
                time.sleep(0.1)
    finally:
        connection.close()
    return ran


async def test_random_traffic_through_kills_and_a_canal_restart_ends_equal_to_the_table(
    new_service: ServiceFactory, es: AsyncElasticsearch,
    mariadb: pymysql.connections.Connection, new_table: TableFactory,
) -> None:
    """A week of trouble in a minute: two members share the stream, one is SIGKILLed and comes
    back, Canal restarts mid-stream (it re-sends from its saved position); the index ends
    equal to the table, row for row."""
    table = new_table("id INT PRIMARY KEY, v INT NOT NULL, label VARCHAR(32) NOT NULL")
    first = await following(new_service, "canal_mirror", table)
    second = await (
        await new_service("canal_mirror", params=params_for(table), joining=first)
    ).started()
    traffic = asyncio.create_task(asyncio.to_thread(random_traffic, table, 3000, seed=7))
    try:
        await asyncio.sleep(1.5)
        first.kill()  # SIGKILL with rows in flight: the group hands its partitions over
        await asyncio.sleep(1.0)
        await stack("stop", "canal")  # the binlog goes on meanwhile
        await asyncio.sleep(1.0)
    finally:
        await stack("start", "canal")
    await first.started()  # and back: another rebalance
    assert await traffic == 3000

    await wait_mirrored(es, mariadb, table, second)
    assert len(table_rows(mariadb, table)) > 10  # the traffic left rows to compare


async def test_a_crash_after_a_key_change_and_the_old_key_inserted_again_keeps_both_documents(
    new_service: ServiceFactory, es: AsyncElasticsearch,
    mariadb: pymysql.connections.Connection, new_table: TableFactory,
) -> None:
    """Insert 1, change its key to 2, insert 1 again; SIGKILL before any commit, so the restart
    replays all three. The replayed delete of the old key must not remove the new row 1."""
    table = new_table("id INT PRIMARY KEY, label VARCHAR(32) NOT NULL")
    service = await new_service(
        "canal_mirror", params=params_for(table, CANAL_PB_TOPIC), create_topic=False,
        # No commit before the kill: the group's earliest start replays the whole scenario.
        settings={"kafka": {"topics": [CANAL_PB_TOPIC], "commit_interval_ms": 600_000,
                            "auto_offset_reset": "earliest"}},
    )
    await service.started()
    execute(mariadb, f"INSERT INTO {table} VALUES (1, 'first')",
            f"UPDATE {table} SET id = 2 WHERE id = 1",
            f"INSERT INTO {table} VALUES (1, 'again')")
    await wait_mirrored(es, mariadb, table, service)
    committed = await committed_and_end(service.bootstrap, service.group, CANAL_PB_TOPIC)
    assert committed[0][0] is None, committed  # so the restart replays, from the start

    service.kill()
    await service.started()
    stats = await service.rows_done(3, timeout=ARRIVAL_TIMEOUT)  # the three, replayed
    assert await documents(es, service.index) == table_rows(mariadb, table) == {
        "1": {"id": 1, "label": "again"}, "2": {"id": 2, "label": "first"},
    }
    # The replay changed nothing, and the counters say so: every write of it was stale.
    assert (stats["writes_applied"], stats["stale_writes"]) == (0, 4), stats
