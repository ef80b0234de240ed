"""`esupdater verify` against the real stack: a MariaDB table backfilled into Elasticsearch,
then compared row by row with what the handlers make of it, damaged by hand, and repaired.

The handler is tests/integration/handlers/table_mirror.py (one document per row, the row as
esupdater types it), the same one `esupdater backfill` writes through. Every command runs as
the user runs it: `python -m esupdater ...` in a working directory holding settings.toml, the
MySQL password in the environment; the tests read its stdout and exit status.
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pymysql
import pytest
from elasticsearch import AsyncElasticsearch

from tests.integration.conftest import TableFactory
from tests.integration.service_harness import Ran, Service, ServiceFactory, doc_count, source
from tools.local_stack import (
    ELASTICSEARCH,
    MARIADB,
    MARIADB_DATABASE,
    MARIADB_PASSWORD,
    MARIADB_USER,
)

#: Where verify and backfill read the MySQL password from (never the settings file).
MYSQL_ENV = {"ESUPDATER_MYSQL__PASSWORD": MARIADB_PASSWORD}
#: Seconds a backfill or verify of these tables may take (a few seconds here; slack for a
#: machine shared with the JVMs).
COMMAND_TIMEOUT = 180.0

#: The table: an integer key, text, exact decimals (one wider than a double holds), a
#: datetime, and NULLs in every column that allows them.
COLUMNS = ("id INT PRIMARY KEY, name VARCHAR(64) NULL, price DECIMAL(10,2) NULL, "
           "big DECIMAL(20,2) NULL, at DATETIME NULL")
EPOCH = datetime(2024, 2, 29, 23, 59, 58)
#: An id no row has (row ids are 3n + 1).
ORPHAN_ID = "999999"

SUMMARY = re.compile(
    r"^verify (?P<table>\S+(?: \(\d+ tables\))?): (?P<rows>\d+) rows, "
    r"(?P<expected>\d+) documents expected, "
    r"(?P<equal>\d+) equal, (?P<missing>\d+) missing, (?P<different>\d+) different, "
    r"(?P<orphans>\d+) orphans$",
    re.MULTILINE,
)
REPAIRED = re.compile(r"^repaired: (?P<written>\d+) written, (?P<deleted>\d+) deleted$",
                      re.MULTILINE)
DIFFERENCE = re.compile(r"^(missing|differs|orphan) ", re.MULTILINE)


@dataclass(frozen=True)
class Summary:
    """The summary line verify prints for one table."""

    rows: int
    expected: int
    equal: int
    missing: int
    different: int
    orphans: int


def summary_of(ran: Ran, table: str) -> Summary:
    """The one summary line of `shop.<table>` on stdout."""
    found = [m for m in SUMMARY.finditer(ran.stdout) if m["table"] == f"shop.{table}"]
    assert len(found) == 1, f"one verify summary line for shop.{table} expected\n{ran}"
    m = found[0]
    return Summary(*(int(m[name]) for name in
                     ("rows", "expected", "equal", "missing", "different", "orphans")))


def differences(ran: Ran) -> list[str]:
    """The difference lines verify printed, in its order."""
    return [line for line in ran.stdout.splitlines() if DIFFERENCE.match(line)]


def all_equal(rows: int) -> Summary:
    return Summary(rows=rows, expected=rows, equal=rows, missing=0, different=0, orphans=0)


# -- the table and its backfill -----------------------------------------------------------------


def table_rows(count: int, seed: int = 7) -> list[tuple[Any, ...]]:
    """`count` rows (id, name, price, big, at): ids 3n + 1, values of every kind the columns
    take (negative, trailing zeros, quotes, non-ASCII, a decimal a double cannot hold),
    NULLs spread over each nullable column at a different period."""
    pick = random.Random(seed)
    rows = []
    for n in range(count):
        name = None if n % 7 == 3 else pick.choice(
            [f"name {n}", f"O'Brien {n}", f"Zoë \"{n}\" ∑", f"{n}", " padded "])
        price = None if n % 11 == 5 else Decimal(pick.randint(-99_999_99, 99_999_99)) / 100
        big = None if n % 13 == 6 else pick.choice(
            [Decimal("123456789012345678.91"), Decimal("0.10"), Decimal(n) / 100])
        at = None if n % 5 == 2 else EPOCH + timedelta(seconds=pick.randint(0, 10**8))
        rows.append((3 * n + 1, name, price, big, at))
    return rows


def fill(mariadb: pymysql.connections.Connection, table: str, rows: list[tuple[Any, ...]]) -> None:
    with mariadb.cursor() as cursor:
        for start in range(0, len(rows), 1_000):
            cursor.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s)",
                               rows[start:start + 1_000])


def settings() -> dict[str, dict[str, Any]]:
    host, port = MARIADB.rsplit(":", 1)
    return {
        "mysql": {"host": host, "port": int(port), "user": MARIADB_USER,
                  "database": MARIADB_DATABASE},
        "elasticsearch": {"hosts": [ELASTICSEARCH]},
    }


async def esupdater(service: Service, *args: str) -> Ran:
    """`esupdater ARGS` in the service's working directory, with the MySQL password."""
    return await service.cli(*args, timeout=COMMAND_TIMEOUT, env=MYSQL_ENV)


async def backfilled(
    new_service: ServiceFactory, new_table: TableFactory,
    mariadb: pymysql.connections.Connection, es: AsyncElasticsearch, rows: int,
) -> tuple[Service, str, list[tuple[Any, ...]]]:
    """A table of `rows` rows, backfilled into the service's index and checked to be there."""
    table = new_table(COLUMNS, prefix="quiet_")
    values = table_rows(rows)
    fill(mariadb, table, values)
    service = await new_service("table_mirror", params={"table": table}, settings=settings())
    ran = await esupdater(service, "backfill", f"shop.{table}")
    assert ran.returncode == 0, str(ran)
    assert await doc_count(es, service.index) == rows
    return service, table, values


class WriteHoldingProxy:
    """A loopback relay to Elasticsearch that holds every document write (PUT, POST or
    DELETE of `_doc`, `_create` or `_bulk`) until `release()`; reads pass.

    It opens the window `verify --repair` has between reading a document and writing it, so
    a test can land the stream's write inside it. Each connection carries one request at a
    time (the client waits for the answer), so a read that starts a request starts with its
    request line; once one is held, the rest of that connection waits with it.
    """

    WRITE = re.compile(rb"^(PUT|POST|DELETE) /(\S*/)?(_doc|_create|_bulk)\b")

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").rstrip("/").rsplit(":", 1)
        self.target = (host, int(port))
        self.held = asyncio.Event()
        self._released = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def release(self) -> None:
        self._released.set()

    async def close(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def requests() -> None:
            holding = False
            while data := await reader.read(65536):
                if not holding and self.WRITE.match(data):
                    holding = True
                    self.held.set()
                if holding:
                    await self._released.wait()
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def answers() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(requests(), answers())
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
            up_writer.transport.abort()


@pytest.fixture
async def holding_proxy() -> AsyncIterator[WriteHoldingProxy]:
    proxy = WriteHoldingProxy(ELASTICSEARCH)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


# -- the tests ----------------------------------------------------------------------------------


async def test_verify_says_equal_after_a_backfill(
    new_service: ServiceFactory, new_table: TableFactory,
    mariadb: pymysql.connections.Connection, es: AsyncElasticsearch,
) -> None:
    service, table, _ = await backfilled(new_service, new_table, mariadb, es, 2_000)

    ran = await esupdater(service, "verify", "-s", "settings.toml", f"shop.{table}")

    assert ran.returncode == 0, str(ran)
    assert summary_of(ran, table) == all_equal(2_000), str(ran)
    assert differences(ran) == [], str(ran)


async def test_verify_finds_a_missing_a_changed_and_an_orphan_document_and_repair_fixes_them(
    new_service: ServiceFactory, new_table: TableFactory,
    mariadb: pymysql.connections.Connection, es: AsyncElasticsearch,
) -> None:
    service, table, values = await backfilled(new_service, new_table, mariadb, es, 2_000)
    index = service.index
    named = [row for row in values if row[1] is not None]
    gone, changed = str(named[10][0]), str(named[20][0])
    changed_name = named[20][1]
    before = {id: await source(es, index, id) for id in (gone, changed)}
    assert (before[changed] or {}).get("name") == changed_name
    await es.delete(index=index, id=gone, refresh=True)
    await es.update(index=index, id=changed, doc={"name": "changed by hand"}, refresh=True)
    await es.index(index=index, id=ORPHAN_ID, document={"id": int(ORPHAN_ID), "name": "no row"},
                   refresh=True)

    found = await esupdater(service, "verify", f"shop.{table}")

    assert found.returncode == 1, str(found)
    assert sorted(differences(found)) == sorted([
        f"missing {index}/{gone}",
        f"differs {index}/{changed}: name: table {changed_name!r} index 'changed by hand'",
        f"orphan {index}/{ORPHAN_ID}",
    ]), str(found)
    assert summary_of(found, table) == Summary(
        rows=2_000, expected=2_000, equal=1_998, missing=1, different=1, orphans=1), str(found)

    repaired = await esupdater(service, "verify", f"shop.{table}", "--repair")

    assert repaired.returncode == 0, str(repaired)
    assert repaired.stdout.splitlines()[-1] == "repaired: 2 written, 1 deleted", str(repaired)
    assert summary_of(repaired, table) == summary_of(found, table), str(repaired)

    again = await esupdater(service, "verify", f"shop.{table}")

    assert again.returncode == 0, str(again)
    assert summary_of(again, table) == all_equal(2_000), str(again)
    # What the index holds now, read directly: the two rows' documents as the backfill
    # wrote them, the orphan gone, one document per row.
    assert {id: await source(es, index, id) for id in (gone, changed)} == before
    assert await source(es, index, ORPHAN_ID) is None
    assert await doc_count(es, index) == 2_000


async def test_verify_sample_checks_only_n_rows(
    new_service: ServiceFactory, new_table: TableFactory,
    mariadb: pymysql.connections.Connection, es: AsyncElasticsearch,
) -> None:
    service, table, _ = await backfilled(new_service, new_table, mariadb, es, 2_000)
    # A full verify would report this one; a sample does not scan for orphans.
    await es.index(index=service.index, id=ORPHAN_ID, document={"name": "no row"},
                   refresh=True)

    ran = await esupdater(service, "verify", "--sample", "50", f"shop.{table}")

    assert ran.returncode == 0, str(ran)
    assert summary_of(ran, table) == all_equal(50), str(ran)
    assert differences(ran) == [], str(ran)


async def test_verify_sample_draws_its_rows_from_the_whole_table(
    new_service: ServiceFactory, new_table: TableFactory,
    mariadb: pymysql.connections.Connection, es: AsyncElasticsearch,
) -> None:
    service, table, values = await backfilled(new_service, new_table, mariadb, es, 2_000)
    # The documents of the second half of the rows go: 50 rows drawn from the whole table
    # miss some and find some (all 50 from one half: odds below 1e-14).
    await es.bulk(operations=[{"delete": {"_index": service.index, "_id": str(row[0])}}
                              for row in values[1_000:]], refresh=True)
    assert await doc_count(es, service.index) == 1_000

    ran = await esupdater(service, "verify", f"shop.{table}", "--sample", "50", "--show", "50")

    assert ran.returncode == 1, str(ran)
    summary = summary_of(ran, table)
    assert (summary.rows, summary.expected, summary.different, summary.orphans) == (50, 50, 0, 0)
    assert 0 < summary.missing < 50, str(ran)
    assert summary.equal == 50 - summary.missing, str(ran)
    assert len(differences(ran)) == summary.missing, str(ran)


async def test_verify_prints_the_first_show_differences_and_counts_them_all(
    new_service: ServiceFactory, new_table: TableFactory,
    mariadb: pymysql.connections.Connection, es: AsyncElasticsearch,
) -> None:
    service, table, values = await backfilled(new_service, new_table, mariadb, es, 200)
    for row in values[:15]:
        await es.delete(index=service.index, id=str(row[0]))
    await es.indices.refresh(index=service.index)
    gone = {f"missing {service.index}/{row[0]}" for row in values[:15]}

    by_default = await esupdater(service, "verify", f"shop.{table}")
    three = await esupdater(service, "verify", f"shop.{table}", "--show", "3")

    for ran, shown in ((by_default, 10), (three, 3)):
        assert ran.returncode == 1, str(ran)
        assert len(differences(ran)) == shown, str(ran)
        assert set(differences(ran)) <= gone, str(ran)
        assert summary_of(ran, table) == Summary(
            rows=200, expected=200, equal=185, missing=15, different=0, orphans=0), str(ran)


async def test_verify_tells_a_decimal_rounded_to_a_double_from_the_exact_table_value(
    new_service: ServiceFactory, new_table: TableFactory,
    mariadb: pymysql.connections.Connection, es: AsyncElasticsearch,
) -> None:
    """What a client that sends a Decimal as a float leaves: 123456789012345678.91 stored as
    123456789012345680. The handlers' document has the exact number."""
    service, table, values = await backfilled(new_service, new_table, mariadb, es, 200)
    wide = Decimal("123456789012345678.91")
    id = str(next(row[0] for row in values if row[3] == wide))
    # A whole write: an update would be a no-op (Elasticsearch compares the parsed doubles).
    stored = (await es.get(index=service.index, id=id))["_source"]
    await es.index(index=service.index, id=id, document={**stored, "big": float(wide)},
                   refresh=True)

    ran = await esupdater(service, "verify", f"shop.{table}")

    assert ran.returncode == 1, str(ran)
    assert [line.split(": ")[:2] for line in differences(ran)] == [
        [f"differs {service.index}/{id}", "big"]], str(ran)
    assert summary_of(ran, table).different == 1, str(ran)


async def test_verify_of_a_pattern_no_table_matches_exits_2_naming_the_pattern(
    new_service: ServiceFactory,
) -> None:
    service = await new_service("table_mirror", params={"table": "t_none"}, settings=settings())

    ran = await esupdater(service, "verify", "shop.t_no_such_table_*")

    assert ran.returncode == 2, str(ran)
    assert "shop.t_no_such_table_*" in ran.output, str(ran)
    assert "Traceback" not in ran.output, str(ran)


async def test_verify_with_a_wrong_mysql_password_exits_2_naming_the_mysql_settings(
    new_service: ServiceFactory, new_table: TableFactory,
) -> None:
    table = new_table(COLUMNS, prefix="quiet_")
    service = await new_service("table_mirror", params={"table": table}, settings=settings())

    ran = await service.cli("verify", f"shop.{table}", timeout=COMMAND_TIMEOUT,
                            env={"ESUPDATER_MYSQL__PASSWORD": "not-the-password"})

    assert ran.returncode == 2, str(ran)
    assert "[mysql]" in ran.output, str(ran)
    assert "Traceback" not in ran.output, str(ran)


async def test_repair_leaves_what_the_stream_wrote_after_verify_read_it(
    new_service: ServiceFactory, new_table: TableFactory,
    mariadb: pymysql.connections.Connection, es: AsyncElasticsearch,
    holding_proxy: WriteHoldingProxy,
) -> None:
    """The stream writes all three documents between verify's reads and its repairs (the
    proxy holds the repairs until then): each repair is refused, the stream's documents stay."""
    service, table, values = await backfilled(new_service, new_table, mariadb, es, 200)
    index = service.index
    gone, changed = str(values[10][0]), str(values[20][0])
    await es.delete(index=index, id=gone, refresh=True)
    await es.update(index=index, id=changed, doc={"name": "changed by hand"}, refresh=True)
    await es.index(index=index, id=ORPHAN_ID, document={"name": "no row"}, refresh=True)
    service.write_settings({"elasticsearch": {"hosts": [holding_proxy.url]}})

    repairing = asyncio.create_task(esupdater(service, "verify", f"shop.{table}", "--repair"))
    holding = asyncio.create_task(holding_proxy.held.wait())
    await asyncio.wait({repairing, holding}, timeout=COMMAND_TIMEOUT,
                       return_when=asyncio.FIRST_COMPLETED)
    if not holding.done():
        holding.cancel()
        if not repairing.done():
            repairing.cancel()
        ran = repairing.result() if repairing.done() and not repairing.cancelled() else None
        raise AssertionError(f"verify --repair wrote nothing to hold:\n{ran}")
    streamed = {id: {"id": int(id), "name": f"streamed {id}"}
                for id in (gone, changed, ORPHAN_ID)}
    for version, (id, document) in enumerate(streamed.items(), start=5):
        await es.index(index=index, id=id, document=document, version=version,
                       version_type="external", refresh=True)
    holding_proxy.release()
    ran = await repairing

    assert ran.returncode == 1, str(ran)
    assert summary_of(ran, table) == Summary(
        rows=200, expected=200, equal=198, missing=1, different=1, orphans=1), str(ran)
    assert [m.groups() for m in REPAIRED.finditer(ran.stdout)] == [("0", "0")], str(ran)
    assert {id: await source(es, index, id) for id in streamed} == streamed


async def test_a_glob_over_shards_of_one_index_verifies_them_together_without_false_orphans(
    new_service: ServiceFactory, new_table: TableFactory,
    mariadb: pymysql.connections.Connection, es: AsyncElasticsearch,
) -> None:
    """Two shard tables write one index: each one's documents are the other's "orphans"
    only if verify scans the index per table. One pattern, one comparison."""
    family = f"quiet_{uuid.uuid4().hex[:6]}_"
    shards = [new_table(COLUMNS, prefix=family) for _ in range(2)]
    rows = table_rows(300)
    fill(mariadb, shards[0], rows[::2])
    fill(mariadb, shards[1], rows[1::2])
    service = await new_service("table_mirror", params={"table": f"{family}*"},
                                settings=settings())
    ran = await esupdater(service, "backfill", f"shop.{family}*")
    assert ran.returncode == 0, str(ran)
    await es.index(index=service.index, id=ORPHAN_ID, document={"id": int(ORPHAN_ID)},
                   refresh=True)

    found = await esupdater(service, "verify", f"shop.{family}*")

    assert found.returncode == 1, str(found)
    assert differences(found) == [f"orphan {service.index}/{ORPHAN_ID}"], str(found)
    assert summary_of(found, f"{family}* (2 tables)") == Summary(
        rows=300, expected=300, equal=300, missing=0, different=0, orphans=1), str(found)
    repaired = await esupdater(service, "verify", f"shop.{family}*", "--repair")
    assert repaired.returncode == 0, str(repaired)
    assert await doc_count(es, service.index) == 300
