"""TableReader against the local MariaDB: every row once, in key order, typed as Canal types it.

The typed test writes rows of every documented type (docs/types.md), reads them with
TableReader, and compares with what Canal publishes for the same rows on its flat topic,
decoded by CanalDecoder: a backfilled row and a streamed row must be the same value.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pymysql
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from pydantic import SecretStr

from esupdater.canal import CanalDecoder
from esupdater.change import Change, Position
from esupdater.settings import MySQLSettings
from esupdater.table_reader import TableReader, TableReadError
from tests.integration.conftest import TableFactory
from tests.integration.test_canal_live import ARRIVAL_TIMEOUT, CANAL_TOPIC, NOT_ARRIVED, execute
from tools.local_stack import KAFKA, MARIADB, MARIADB_DATABASE, MARIADB_PASSWORD, MARIADB_USER

ROWS = 20_000
CHUNK = 1_000


def mysql_settings() -> MySQLSettings:
    host, port = MARIADB.rsplit(":", 1)
    return MySQLSettings(host=host, port=int(port), user=MARIADB_USER,
                         password=SecretStr(MARIADB_PASSWORD), database=MARIADB_DATABASE)


@pytest.fixture
async def reader() -> AsyncIterator[TableReader]:
    async with await TableReader.connect(mysql_settings()) as table_reader:
        yield table_reader


def fill(mariadb: pymysql.connections.Connection, table: str, values: list[str]) -> None:
    """Inserts `values` (SQL tuples) in batches of 2,000."""
    for start in range(0, len(values), 2_000):
        execute(mariadb, f"INSERT INTO {table} VALUES " + ",".join(values[start:start + 2_000]))


async def read_all(
    reader: TableReader, table: str, chunk_size: int = CHUNK, where: str | None = None
) -> list[list[Change]]:
    shape = await reader.describe(MARIADB_DATABASE, table)
    return [chunk.changes async for chunk in reader.chunks(shape, chunk_size=chunk_size,
                                                           where=where)]


async def test_a_20000_row_table_is_read_in_chunks_once_each_in_key_order(
    reader: TableReader, mariadb: pymysql.connections.Connection, new_table: TableFactory
) -> None:
    table = new_table("id BIGINT UNSIGNED PRIMARY KEY, name VARCHAR(32)", prefix="quiet_")
    # Keys far apart and past 2**53, where a comparison as doubles would lose rows.
    ids = [2**63 + n * 7 for n in range(ROWS)]
    fill(mariadb, table, [f"({i}, 'n{i}')" for i in ids])

    chunks = await read_all(reader, table)

    assert [len(chunk) for chunk in chunks] == [CHUNK] * (ROWS // CHUNK)
    changes = [change for chunk in chunks for change in chunk]
    assert [change.row["id"] for change in changes] == ids
    assert [change.position for change in changes] == [
        Position(f"shop.{table}", -1, number) for number in range(ROWS)]
    first = changes[0]
    assert (first.type, first.is_backfill, first.source, first.old) == ("INSERT", True, "table",
                                                                         None)
    assert (first.pk_names, first.pk, first.raw) == (("id",), str(ids[0]),
                                                     {"id": str(ids[0]), "name": f"n{ids[0]}"})


async def test_a_composite_key_is_read_in_key_order_once_each(
    reader: TableReader, mariadb: pymysql.connections.Connection, new_table: TableFactory
) -> None:
    table = new_table("a INT, b VARCHAR(8), c BINARY(2), v INT, PRIMARY KEY (a, b, c)",
                      prefix="quiet_")
    # Few distinct values per column, so chunks end in the middle of each prefix.
    keys = sorted({(n % 7, f"k{n % 13:02d}", bytes([n % 5, 0])) for n in range(ROWS)}
                  | {(n % 50, f"x{n % 41:02d}", bytes([0, n % 3])) for n in range(ROWS)})
    fill(mariadb, table, [f"({a}, '{b}', x'{c.hex()}', {n})" for n, (a, b, c) in enumerate(keys)])

    chunks = await read_all(reader, table, chunk_size=97)

    changes = [change for chunk in chunks for change in chunk]
    assert [(c.row["a"], c.row["b"], c.row["c"].encode("latin-1")) for c in changes] == keys
    assert [c.row["v"] for c in changes] == list(range(len(keys)))


async def test_where_filters_rows_and_the_snapshot_carries_a_binlog_position_and_time(
    reader: TableReader, mariadb: pymysql.connections.Connection, new_table: TableFactory
) -> None:
    table = new_table("id INT PRIMARY KEY, v INT", prefix="quiet_")
    fill(mariadb, table, [f"({i}, {i % 3})" for i in range(1, 101)])
    shape = await reader.describe(MARIADB_DATABASE, table)
    before = time.time()

    chunks = [chunk async for chunk in reader.chunks(shape, chunk_size=10, where="v = 0")]

    assert [c.row["id"] for chunk in chunks for c in chunk.changes] == list(range(3, 101, 3))
    for chunk in chunks:
        assert chunk.snapshot is not None
        assert chunk.snapshot.file.startswith("mariadb-bin.")
        assert chunk.snapshot.position > 0
        assert before - 5 < chunk.snapshot_time.timestamp() < time.time() + 5
        assert all(c.executed_at == chunk.snapshot_time for c in chunk.changes)
    assert chunks[-1].last_key == (99,)


async def test_a_row_inserted_during_the_read_is_read_beyond_the_cursor_and_not_behind_it(
    reader: TableReader, mariadb: pymysql.connections.Connection, new_table: TableFactory
) -> None:
    """Chunks are separate snapshots: after the first chunk (keys 10..100), a row with key 5
    (behind the cursor) is never read, one with key 1005 (beyond it) is."""
    table = new_table("id INT PRIMARY KEY", prefix="quiet_")
    fill(mariadb, table, [f"({i})" for i in range(10, 1001, 10)])
    shape = await reader.describe(MARIADB_DATABASE, table)
    seen: list[int] = []

    async for chunk in reader.chunks(shape, chunk_size=10):
        seen += [change.row["id"] for change in chunk.changes]
        if len(seen) == 10:
            execute(mariadb, f"INSERT INTO {table} VALUES (5), (1005)")

    assert seen == [*range(10, 1001, 10), 1005]


async def test_globs_resolve_to_base_tables_in_name_order_and_a_table_without_a_key_is_refused(
    reader: TableReader, mariadb: pymysql.connections.Connection, new_table: TableFactory
) -> None:
    keyed = sorted(new_table("id INT PRIMARY KEY") for _ in range(3))
    prefix = keyed[0][:-4]  # shares the leading characters of one at least
    plain = new_table("id INT, v INT")
    execute(mariadb, f"CREATE OR REPLACE VIEW {keyed[0]}_view AS SELECT id FROM {keyed[0]}")
    try:
        names = await reader.tables(f"shop.{prefix}*")
        found = await reader.tables("shop.t_*")
    finally:
        execute(mariadb, f"DROP VIEW IF EXISTS {keyed[0]}_view")

    assert names == [("shop", name) for name in keyed if name.startswith(prefix)]
    assert [("shop", name) for name in sorted([*keyed, plain])] == [
        item for item in found if item[1] in {*keyed, plain}]
    assert all(not name.endswith("_view") for _, name in found)
    with pytest.raises(TableReadError, match=rf"shop\.{plain} has no primary key"):
        await reader.describe("shop", plain)
    with pytest.raises(TableReadError, match=r"shop\.no_such_table not found"):
        await reader.describe("shop", "no_such_table")


#: Every type of docs/types.md, with values that test the edges.
TYPED = """
    id INT PRIMARY KEY, ti TINYINT, si SMALLINT, mi MEDIUMINT UNSIGNED, i INT, big BIGINT UNSIGNED,
    flag TINYINT(1), price DECIMAL(10,2), wide DECIMAL(65,30), f FLOAT, d DOUBLE,
    dt DATETIME(6), dt3 DATETIME(3), ts TIMESTAMP(6) NULL, day DATE, t TIME, t6 TIME(6), yr YEAR,
    doc JSON, b1 BIT(1), b64 BIT(64), size ENUM('s','m','l'), tags SET('a','b','c'),
    c CHAR(4), vc VARCHAR(32), txt TEXT, bin BINARY(4), vb VARBINARY(8), bl BLOB
"""
TYPED_ROWS = [
    """(1, -128, -32768, 16777215, -2147483648, 18446744073709551615,
        1, 12.50, -12345678901234567890123456789012345.123456789012345678901234567890,
        0.25, 0.1, '2024-03-01 12:30:45.123456', '2024-03-01 12:30:45.120',
        '2024-03-01 10:00:00.000001', '2024-02-29', '-838:59:59', '12:30:45.5', 2024,
        '{"a": [1, 2.50], "b": null, "c": "Zoë"}', b'1', 18446744073709551615,
        'm', 'a,c', 'ab', 'Zoë ☕ 🚀', 'long text', x'01000000', x'FF0000', x'00FF00')""",
    """(2, 0, 0, 0, 0, 0, 0, 0.00, 0, 1e10, 1.5e300, '0000-00-00 00:00:00', '2024-03-02 00:00:00',
        '1970-01-01 00:00:01', '0000-00-00', '00:00:00', '-00:00:00.000001', 0,
        '[]', b'0', b'0', 's', '', '', '', '', x'00000000', x'', x'')""",
    """(3, 127, NULL, NULL, NULL, NULL, NULL, -0.01, NULL, 3.3333333, 0.3333333333333333,
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, b'101', 'l', 'a,b,c', NULL,
        NULL, NULL, x'ABCDEF12', NULL, NULL)""",
]


async def canal_changes(
    decoder: CanalDecoder, start: dict[TopicPartition, int], table: str, count: int
) -> list[Change]:
    """The first `count` row changes of `table` Canal published on CANAL_TOPIC after `start`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    await consumer.start()
    found: list[Change] = []
    try:
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + ARRIVAL_TIMEOUT
        while len(found) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    position = Position(tp.topic, tp.partition, record.offset)
                    found += [change for change in decoder.decode(record.value, position)
                              if change.table == table and not change.is_ddl]
    finally:
        await consumer.stop()
    assert len(found) >= count, f"{len(found)} of {count} rows of {table} arrived; {NOT_ARRIVED}"
    return found


async def canal_ends() -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([CANAL_TOPIC])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA)
    await consumer.start()
    try:
        tps = [TopicPartition(CANAL_TOPIC, p["partition"]) for p in described["partitions"]]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


def by_id(changes: list[Change]) -> dict[int, Change]:
    return {change.row["id"]: change for change in changes}


@pytest.mark.parametrize("tinyint1_as_bool", [False, True], ids=["tinyint1-int", "tinyint1-bool"])
async def test_every_documented_type_reads_as_the_value_canal_delivers_for_the_same_row(
    tinyint1_as_bool: bool, mariadb: pymysql.connections.Connection, new_table: TableFactory
) -> None:
    table = new_table(TYPED)
    start = await canal_ends()
    execute(mariadb, f"INSERT INTO {table} VALUES {', '.join(TYPED_ROWS)}")

    streamed = by_id(await canal_changes(CanalDecoder(tinyint1_as_bool=tinyint1_as_bool),
                                         start, table, len(TYPED_ROWS)))
    async with await TableReader.connect(mysql_settings(),
                                         tinyint1_as_bool=tinyint1_as_bool) as reader:
        read = by_id([change for chunk in await read_all(reader, table) for change in chunk])

    assert sorted(read) == sorted(streamed) == [1, 2, 3]
    for key, change in read.items():
        canal = streamed[key]
        differing = {name: (value, canal.row.get(name)) for name, value in change.row.items()
                     if (value, type(value)) != (canal.row.get(name), type(canal.row.get(name)))}
        assert differing == {}, f"row {key}: table read vs Canal"
        assert change.row.keys() == canal.row.keys()
        assert (change.pk, change.pk_names) == (canal.pk, canal.pk_names)
    assert read[1].row["flag"] is (True if tinyint1_as_bool else 1)


async def test_the_rows_left_are_estimated_without_a_scan_for_the_progress_bar(
    reader: TableReader, mariadb: pymysql.connections.Connection, new_table: TableFactory
) -> None:
    table = new_table("id INT PRIMARY KEY, name VARCHAR(32)", prefix="quiet_")
    fill(mariadb, table, [f"({i}, 'n{i}')" for i in range(10_000)])
    shape = await reader.describe(MARIADB_DATABASE, table)

    whole = await reader.estimate_rows(shape)
    rest = await reader.estimate_rows(shape, after=(7_499,))
    filtered = await reader.estimate_rows(shape, after=(7_499,), where="id < 8000")

    # InnoDB's figures are estimates: right within a factor, never a count.
    assert whole is not None
    assert 5_000 <= whole <= 20_000, whole
    assert rest is not None
    assert 1_250 <= rest <= 5_000, rest
    assert filtered is not None
    assert filtered <= rest, (filtered, rest)
    # A condition the server cannot even plan gives no estimate, not an error: the read
    # itself reports it.
    assert await reader.estimate_rows(shape, where="no_such_column = 1") is None
