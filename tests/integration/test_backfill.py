"""`esupdater backfill` against the real stack: MariaDB rows through the handlers into
Elasticsearch, alone and while `esupdater run` follows Canal's stream of the same table.

The handler is tests/integration/handlers/table_mirror.py, the same for both commands: one
document per row, versioned as the README recommends. The proof of docs/backfill.md is the
test that runs both at once under a random workload and then compares every document with
every row; on a difference it shows each differing id with its document, its row, its
Elasticsearch version and every change Canal published for it.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import orjson
import pymysql
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from elasticsearch import AsyncElasticsearch, NotFoundError

from esupdater.canal import CanalDecoder
from esupdater.change import Change, Position
from tests.integration.conftest import TableFactory, connect_mariadb
from tests.integration.service_harness import (
    Ran,
    Service,
    ServiceFactory,
    child_env,
    committed_and_end,
    doc_count,
    eventually,
)
from tests.integration.test_canal_live import (
    ARRIVAL_TIMEOUT,
    CANAL_TOPIC,
    NOT_ARRIVED,
    documents,
    execute,
)
from tests.integration.test_table_reader import canal_changes, canal_ends, fill
from tests.integration.test_verify import all_equal
from tests.integration.test_verify import summary_of as verify_summary_of
from tools.local_stack import (
    KAFKA,
    MARIADB,
    MARIADB_DATABASE,
    MARIADB_PASSWORD,
    MARIADB_USER,
)

#: What the backfill reads its password from (never the settings file).
MYSQL_ENV = {"ESUPDATER_MYSQL__PASSWORD": MARIADB_PASSWORD}

#: The tables the tests backfill: a few types with their documented JSON forms (README,
#: "Values in row"): DECIMAL an exact number, DATETIME an ISO string, TINYINT(1) 0/1, NULLs.
COLUMNS = """
    id INT PRIMARY KEY, name VARCHAR(32) NOT NULL, qty INT NULL, price DECIMAL(10,2) NULL,
    at DATETIME NULL, flag TINYINT(1) NULL, note VARCHAR(64) NULL
"""
EPOCH = datetime(2024, 1, 1)
#: The columns `table_documents` compares itself; `esupdater verify` compares the others too.
BASE_COLUMNS = ("id", "name", "qty", "price", "at", "flag", "note")
#: The race's table adds every other documented type (README, "Values in row"; the same list
#: as test_table_reader's TYPED). Values stay in what a dynamic mapping takes (a BIGINT
#: UNSIGNED beyond 2**63 needs an `unsigned_long` mapping, a JSON value one shape per field).
RACE_COLUMNS = COLUMNS + """,
    ti TINYINT NULL, mi MEDIUMINT UNSIGNED NULL, big BIGINT UNSIGNED NULL, f FLOAT NULL,
    d DOUBLE NULL, dt6 DATETIME(6) NULL, ts TIMESTAMP(3) NULL, day DATE NULL, t TIME(6) NULL,
    yr YEAR NULL, doc JSON NULL, bits BIT(8) NULL, size ENUM('s','m','l') NULL,
    tags SET('a','b','c') NULL, ch CHAR(4) NULL, txt TEXT NULL, vb VARBINARY(8) NULL,
    bn BINARY(3) NULL
"""

SUMMARY = re.compile(
    r"^backfill (?P<table>\S+): (?P<read>\d+) rows read, (?P<written>\d+) written, "
    r"(?P<kept>\d+) kept \(the index had them\), (?P<set_aside>\d+) set aside "
    r"in (?P<seconds>\d+(?:\.\d+)?) s$",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Summary:
    """One table's final line of `esupdater backfill`."""

    read: int
    written: int
    kept: int
    set_aside: int


def summary_of(ran: Ran, table: str) -> Summary:
    """The summary line of `shop.<table>`: exactly one, on stdout."""
    found = [m for m in SUMMARY.finditer(ran.stdout) if m["table"] == f"shop.{table}"]
    assert len(found) == 1, f"one summary line for shop.{table} expected\n{ran}"
    m = found[0]
    return Summary(int(m["read"]), int(m["written"]), int(m["kept"]), int(m["set_aside"]))


def mysql_section() -> dict[str, Any]:
    host, port = MARIADB.rsplit(":", 1)
    return {"host": host, "port": int(port), "user": MARIADB_USER, "database": MARIADB_DATABASE}


async def mirroring(
    new_service: ServiceFactory, table: str, *, topics: list[str] | None = None,
    backfill_delay: float = 0.0,
) -> Service:
    """A working dir whose settings read MariaDB and whose handlers mirror `table`; not
    started. `topics`: what `esupdater run` there follows (none is created otherwise);
    `backfill_delay`: table_mirror's, the most a backfilled row waits before its write."""
    settings: dict[str, dict[str, Any]] = {"mysql": mysql_section()}
    if topics is not None:
        settings["kafka"] = {"topics": topics}
    return await new_service(
        "table_mirror", params={"table": table, "backfill_delay": backfill_delay},
        create_topic=False, settings=settings)


# -- rows and the documents they should give ---------------------------------------------------


class Sql(str):
    """A value already written as SQL (hex literals, JSON, times)."""


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, Sql):
        return str(value)
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, datetime):
        return f"'{value:%Y-%m-%d %H:%M:%S}'"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def values_sql(values: dict[str, Any]) -> str:
    return "(" + ", ".join(sql_literal(v) for v in values.values()) + ")"


def generated_row(i: int) -> dict[str, Any]:
    """Row `i` of the big table, as pymysql would read it back (NULLs spread over columns)."""
    return {
        "id": i,
        "name": f"name {i} é",
        "qty": None if i % 11 == 0 else i % 1000 - 500,
        "price": Decimal(f"{i}.{i % 100:02d}"),
        "at": EPOCH + timedelta(seconds=37 * i),
        "flag": None if i % 13 == 0 else i % 2,
        "note": None if i % 7 == 0 else f"note {i}",
    }


def as_document(row: dict[str, Any]) -> dict[str, Any]:
    """A row (as pymysql reads it) as the mirror's document reads back from Elasticsearch:
    DECIMAL a JSON number (parsed as a float here), DATETIME `YYYY-MM-DDTHH:MM:SS`."""

    def json_form(value: Any) -> Any:
        if isinstance(value, Decimal):
            return float(value)
        if isinstance(value, datetime):
            return value.isoformat()
        return value

    return {name: json_form(value) for name, value in row.items()}


def table_documents(mariadb: pymysql.connections.Connection, table: str) -> dict[str, Any]:
    """Every row of `table` as the document the mirror should hold for it, by id (the
    BASE_COLUMNS only)."""
    with mariadb.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(BASE_COLUMNS)} FROM {table}")
        return {str(row["id"]): as_document(row) for row in cursor.fetchall()}


def seen_by(service: Service) -> dict[int, set[tuple[str, str, str]]]:
    """What table_mirror's processes wrote to seen.log: per pid, (type, is_backfill, source)."""
    seen: dict[int, set[tuple[str, str, str]]] = {}
    path = service.workdir / "seen.log"
    for line in path.read_text().splitlines() if path.is_file() else []:
        pid, type_, backfill, source = line.split()
        seen.setdefault(int(pid), set()).add((type_, backfill, source))
    return seen


# -- a backfill the test can kill ---------------------------------------------------------------


class BackfillProcess:
    """`python -m esupdater backfill ARGS` in a service's working dir, its stdout and stderr
    in files there: a test can SIGKILL it, or wait for it like `Service.cli`."""

    def __init__(self, proc: asyncio.subprocess.Process, args: tuple[str, ...],
                 out: Path, err: Path) -> None:
        self.proc, self.args, self.out, self.err = proc, args, out, err

    @classmethod
    async def start(cls, service: Service, *args: str) -> BackfillProcess:
        n = len(list(service.workdir.glob("backfill-*.out")))
        out, err = (service.workdir / f"backfill-{n}.{kind}" for kind in ("out", "err"))
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "esupdater", "backfill", *args,
                cwd=service.workdir, env=child_env(MYSQL_ENV), stdout=stdout, stderr=stderr,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            )
        return cls(proc, ("backfill", *args), out, err)

    def ran(self) -> Ran:
        assert self.proc.returncode is not None
        return Ran(self.args, self.proc.returncode, self.out.read_text(errors="replace"),
                   self.err.read_text(errors="replace"))

    async def finish(self, timeout: float = 60.0) -> Ran:  # noqa: ASYNC109
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.kill()
            await self.proc.wait()
            raise AssertionError(f"esupdater backfill still running after {timeout} s\n"
                                 f"{self.ran()}") from None
        return self.ran()

    def kill(self) -> None:
        """SIGKILL: no flush, no last checkpoint, as a crash leaves it."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)


BackfillFactory = Callable[..., Awaitable[BackfillProcess]]


@pytest.fixture
async def spawn_backfill() -> AsyncIterator[BackfillFactory]:
    """Starts `esupdater backfill` processes; teardown kills those still running and prints
    each one's output (pytest shows it for a failed test)."""
    started: list[BackfillProcess] = []

    async def spawn(service: Service, *args: str) -> BackfillProcess:
        process = await BackfillProcess.start(service, *args)
        started.append(process)
        return process

    try:
        yield spawn
    finally:
        for process in started:
            process.kill()
            await process.proc.wait()
            print(f"\n===== {process.out.name} / {process.err.name}\n{process.ran()}"[-20_000:])


# -- 1. a plain backfill -------------------------------------------------------------------------

BIG = 100_000
SAMPLE = 200


async def test_a_backfill_of_a_100000_row_table_into_an_empty_index_writes_every_row_typed(
    new_service: ServiceFactory, es: AsyncElasticsearch, es_url: str,
    mariadb: pymysql.connections.Connection, new_table: TableFactory,
) -> None:
    table = new_table(COLUMNS, prefix="quiet_")  # 100,000 rows Canal need not publish
    fill(mariadb, table, [values_sql(generated_row(i)) for i in range(1, BIG + 1)])
    service = await mirroring(new_service, table)

    ran = await service.cli("backfill", f"shop.{table}", env=MYSQL_ENV, timeout=180)

    print(ran.stdout)
    assert ran.returncode == 0, ran
    assert summary_of(ran, table) == Summary(read=BIG, written=BIG, kept=0, set_aside=0), ran
    assert await doc_count(es, service.index) == BIG
    spelled_out = {1, 7, 11, 13, 100, BIG}
    ids = sorted(spelled_out | set(random.Random(1).sample(range(1, BIG + 1), SAMPLE)))
    found = await es.mget(index=service.index, ids=[str(i) for i in ids])
    documents_by_id = {doc["_id"]: doc.get("_source") for doc in found["docs"]}
    differing = {i: (documents_by_id[str(i)], as_document(generated_row(i))) for i in ids
                 if documents_by_id[str(i)] != as_document(generated_row(i))}
    assert differing == {}, "(document, expected) of the sampled ids that differ"
    # Spelled out: the documented forms of a DECIMAL and a DATETIME, and NULLs.
    assert documents_by_id["100"] == {
        "id": 100, "name": "name 100 é", "qty": -400, "price": 100.0,
        "at": "2024-01-01T01:01:40", "flag": 0, "note": "note 100",
    }
    assert (documents_by_id["7"]["note"], documents_by_id["11"]["qty"],
            documents_by_id["13"]["flag"], documents_by_id["1"]["flag"]) == (None, None, None, 1)
    assert documents_by_id[str(BIG)]["price"] == 100000.0
    # Every digit of the DECIMAL reaches Elasticsearch, as for a streamed row.
    raw = await asyncio.to_thread(read_url, f"{es_url}/{service.index}/_source/100")
    assert b'"price":100.00' in raw, raw
    # The handler got INSERTs marked as backfilled, and nothing else.
    assert list(seen_by(service).values()) == [{("INSERT", "True", "table")}]
    # A finished backfill says so: the checkpoint is done and a resume reads nothing.
    checkpoint = orjson.loads((service.runtime / "backfill" / f"shop.{table}.json").read_bytes())
    assert checkpoint["done"] is True, checkpoint
    again = await service.cli("backfill", f"shop.{table}", "--resume", env=MYSQL_ENV)
    assert again.returncode == 0, again
    assert summary_of(again, table) == Summary(read=0, written=0, kept=0, set_aside=0), again
    # Not on a terminal, progress came as lines on stderr, with the rows left estimated.
    assert PROGRESS_LINE.search(ran.stderr), ran
    # And verify, reading the table through the same handlers, finds the index equal.
    verified = await service.cli("verify", f"shop.{table}", env=MYSQL_ENV, timeout=180)
    assert verified.returncode == 0, verified
    assert verify_summary_of(verified, table) == all_equal(BIG), verified


#: A progress line of a backfill that is not on a terminal (esupdater.progress).
PROGRESS_LINE = re.compile(
    r"^backfill shop\.\w+: [\d,]+ of ~[\d,]+ rows \(\d+%\), [\d,]+ rows/s", re.MULTILINE)


def read_url(url: str) -> bytes:
    with urlopen(url, timeout=30) as response:
        return bytes(response.read())


async def test_a_table_without_a_primary_key_or_not_found_is_a_configuration_error(
    new_service: ServiceFactory, new_table: TableFactory,
) -> None:
    keyless = new_table("id INT, v INT")
    service = await mirroring(new_service, keyless)

    no_key = await service.cli("backfill", f"shop.{keyless}", env=MYSQL_ENV)
    missing = await service.cli("backfill", "shop.no_such_table_here", env=MYSQL_ENV)

    assert no_key.returncode == 2, no_key
    assert f"shop.{keyless}" in no_key.output, no_key
    assert "primary key" in no_key.output, no_key
    assert missing.returncode == 2, missing
    assert "shop.no_such_table_here" in missing.output, missing


async def test_rows_elasticsearch_refuses_are_set_aside_and_the_backfill_exits_1(
    new_service: ServiceFactory, es: AsyncElasticsearch,
    mariadb: pymysql.connections.Connection, new_table: TableFactory,
) -> None:
    """An index mapping `name` as a number refuses the rows whose name is not one: with
    `dead_letter.on_failure = "skip"` they are set aside, the others written, exit 1."""
    table = new_table(COLUMNS, prefix="quiet_")
    rows = [{**generated_row(i), "name": str(i) if i % 2 else f"n{i}"} for i in range(1, 11)]
    fill(mariadb, table, [values_sql(row) for row in rows])
    service = await mirroring(new_service, table)
    service.write_settings({"dead_letter": {"on_failure": "skip"}})
    await es.indices.create(index=service.index,
                            mappings={"properties": {"name": {"type": "long"}}})

    ran = await service.cli("backfill", f"shop.{table}", env=MYSQL_ENV)

    assert ran.returncode == 1, ran
    assert summary_of(ran, table) == Summary(read=10, written=5, kept=0, set_aside=5), ran
    found = await es.mget(index=service.index, ids=[str(i) for i in range(1, 11)])
    assert [doc["_id"] for doc in found["docs"] if doc["found"]] == ["1", "3", "5", "7", "9"]


# -- 2. backfill and stream at once --------------------------------------------------------------

PREFILL = 3_000
#: Keys the workload uses: the prefilled ones and as many new ones again as a fifth of them.
KEYS = PREFILL + 600
WORKLOAD_SECONDS = 14.0
#: The backfill starts this long into the workload. Each backfilled row waits up to
#: WRITE_DELAY before its write (table_mirror's `backfill_delay`), longer than a change takes
#: from MariaDB through Canal to the stream's write: so the stream often writes, or deletes,
#: a row after a chunk's snapshot and before that chunk's write of it, the race the design
#: must win. A chunk then takes about WRITE_DELAY, the backfill some 9 s at most RATE rows a
#: second, and the workload runs through all of it: for WORKLOAD_SECONDS, and on a slower
#: machine until AFTER_BACKFILL seconds after the backfill ended (at most MAX_WORKLOAD).
START_BACKFILL_AFTER = 1.0
AFTER_BACKFILL = 2.0
MAX_WORKLOAD = 90.0
WRITE_DELAY = 0.5
RATE = 600
CHUNK = 200
#: The seeds the suite runs (each one ~17 s); more locally with, say,
#: `ESUPDATER_TEST_BACKFILL_SEEDS=11,12,13,14,15 pytest ... -k stream_together`.
SEEDS = [int(seed) for seed in
         os.environ.get("ESUPDATER_TEST_BACKFILL_SEEDS", "11,12,13,14,15").split(",")]
#: The race once more with the backfill SIGKILLed midway and resumed (`--resume`).
KILLED_SEED = 16
RACES = [pytest.param(seed, False, id=f"seed{seed}") for seed in SEEDS] + [
    pytest.param(KILLED_SEED, True, id=f"seed{KILLED_SEED}-killed-and-resumed")]


class Hot:
    """Where the backfill reads now: the chunk after its last checkpointed key. Half the
    workload lands there, on rows a chunk has just read and not yet written."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.started = False
        #: When the backfill (its last run) ended, by time.monotonic(); set by the test.
        self.finished_at: float | None = None

    def workload_goes_on(self, started: float, seconds: float) -> bool:
        """For `seconds`, and until AFTER_BACKFILL after the backfill ended; never past
        MAX_WORKLOAD."""
        now = time.monotonic()
        if now - started >= MAX_WORKLOAD:
            return False
        if now - started < seconds:
            return True
        return self.finished_at is None or now < self.finished_at + AFTER_BACKFILL

    def cursor(self) -> int | None:
        """The last checkpointed key (-1 before the first); None before the backfill starts."""
        if not self.started:
            return None
        try:
            after = orjson.loads(self.checkpoint.read_bytes())["after"]
        except FileNotFoundError:
            return -1
        return int(after[0]) if after else -1


def random_values(rng: random.Random, id_: int) -> dict[str, Any]:
    return {
        "id": id_,
        "name": f"r{rng.randrange(10**6)}",
        "qty": None if rng.random() < 0.1 else rng.randrange(-1000, 1000),
        "price": None if rng.random() < 0.1 else Decimal(rng.randrange(10**7)) / 100,
        "at": None if rng.random() < 0.1 else EPOCH + timedelta(seconds=rng.randrange(10**8)),
        "flag": None if rng.random() < 0.1 else rng.randrange(2),
        "note": None if rng.random() < 0.3 else f"note {rng.randrange(10**6)}",
        **{name: None if rng.random() < 0.1 else typed(rng) for name, typed in TYPED.items()},
    }


def _hex(data: bytes) -> Sql:
    return Sql(f"X'{data.hex()}'" if data else "''")


def _time(rng: random.Random) -> Sql:
    sign, micros = rng.choice(["", "-"]), rng.randrange(839 * 3600 * 10**6)
    seconds, fraction = divmod(micros, 10**6)
    return Sql(f"'{sign}{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
               f".{fraction:06d}'")


def _timestamp(rng: random.Random) -> Sql:
    at = datetime(2001, 1, 1) + timedelta(milliseconds=rng.randrange(10**12))  # to 2032
    return Sql(f"'{at:%Y-%m-%d %H:%M:%S}.{at.microsecond // 1000:03d}'")


def _json(rng: random.Random) -> Sql:
    doc = {"n": rng.randrange(-(10**9), 10**9), "s": f"Zoë {rng.randrange(100)}",
           "l": [rng.randrange(100) for _ in range(rng.randrange(4))]}
    return Sql("'" + orjson.dumps(doc).decode().replace("'", "''") + "'")


#: A random value of each RACE_COLUMNS column beyond BASE_COLUMNS.
TYPED: dict[str, Callable[[random.Random], Any]] = {
    "ti": lambda rng: rng.randrange(-128, 128),
    "mi": lambda rng: rng.randrange(2**24),
    "big": lambda rng: rng.choice([0, 2**63 - 1, rng.randrange(2**63)]),
    "f": lambda rng: Sql(repr(rng.choice([0.25, -1.5e10, 3.3333333, rng.uniform(-1e4, 1e4)]))),
    "d": lambda rng: Sql(repr(rng.choice([0.1, 1.5e30, rng.uniform(-1e12, 1e12)]))),
    "dt6": lambda rng: Sql(f"'{EPOCH + timedelta(microseconds=rng.randrange(10**15))}'"),
    "ts": _timestamp,
    "day": lambda rng: Sql(f"'{EPOCH + timedelta(days=rng.randrange(-10**5, 10**5)):%Y-%m-%d}'"),
    "t": _time,
    "yr": lambda rng: rng.randrange(1901, 2156),
    "doc": _json,
    "bits": lambda rng: rng.randrange(256),
    "size": lambda rng: rng.choice(["s", "m", "l"]),
    "tags": lambda rng: ",".join(m for m in "abc" if rng.random() < 0.5),
    "ch": lambda rng: rng.choice(["", "ab", "Zoë", "abcd"]),
    "txt": lambda rng: "long text ☕ 🚀 " * rng.randrange(5),
    "vb": lambda rng: _hex(rng.randbytes(rng.randrange(9))),
    "bn": lambda rng: _hex(rng.randbytes(3)),
}


def random_workload(table: str, seed: int, seconds: float, hot: Hot) -> Counter[str]:
    """Inserts, updates of random columns, deletes, re-inserts of deleted keys, multi-row
    statements, transactions (some rolled back) on `table` for `seconds`; never a key change.
    Returns how many statements of each kind ran. Runs in a thread (PyMySQL blocks)."""
    rng = random.Random(seed)
    deleted: list[int] = []
    ran: Counter[str] = Counter()

    def key() -> int:
        cursor = hot.cursor()
        if cursor is not None and rng.random() < 0.5:
            return min(KEYS - 1, cursor + rng.randint(1, CHUNK + 50))
        return rng.randrange(KEYS)

    def upsert(ids: Iterable[int]) -> str:
        rows = ", ".join(values_sql(random_values(rng, i)) for i in ids)
        columns = [*BASE_COLUMNS[1:], *TYPED]
        return (f"INSERT INTO {table} VALUES {rows} ON DUPLICATE KEY UPDATE "
                + ", ".join(f"{c} = VALUES({c})" for c in columns))

    def statement() -> tuple[str, str]:
        kind = rng.choices(
            ["insert", "insert_many", "replace", "reinsert", "update", "update_many", "delete",
             "delete_many"],
            weights=[3, 2, 1, 3, 6, 2, 3, 1])[0]
        k = key()
        if kind == "insert":
            return kind, upsert([k])
        if kind == "insert_many":
            return kind, upsert(sorted({key() for _ in range(rng.randint(2, 8))}))
        if kind == "replace":
            return kind, f"REPLACE INTO {table} VALUES {values_sql(random_values(rng, k))}"
        if kind == "reinsert" and deleted:
            return kind, upsert([deleted.pop(rng.randrange(len(deleted)))])
        if kind in ("update", "reinsert"):
            values = random_values(rng, k)
            columns = rng.sample([c for c in values if c != "id"], rng.randint(1, 4))
            assignments = ", ".join(f"{c} = {sql_literal(values[c])}" for c in columns)
            return "update", f"UPDATE {table} SET {assignments} WHERE id = {k}"
        if kind == "update_many":
            return kind, (f"UPDATE {table} SET qty = qty + 1, price = price + 0.01, "
                          f"note = 'many {rng.randrange(10**6)}' "
                          f"WHERE id BETWEEN {k} AND {k + rng.randint(1, 20)}")
        if kind == "delete":
            deleted.append(k)
            return kind, f"DELETE FROM {table} WHERE id = {k}"
        last = k + rng.randint(1, 5)
        deleted.extend(range(k, last + 1))
        return kind, f"DELETE FROM {table} WHERE id BETWEEN {k} AND {last}"

    connection = connect_mariadb()
    try:
        started = time.monotonic()
        while hot.workload_goes_on(started, seconds):
            if rng.random() < 0.15:
                connection.begin()
                for _ in range(rng.randint(2, 6)):
                    kind, sql = statement()
                    execute(connection, sql)
                    ran[f"{kind} (in a transaction)"] += 1
                if rng.random() < 0.1:
                    connection.rollback()
                    ran["transactions rolled back"] += 1
                else:
                    connection.commit()
                    ran["transactions committed"] += 1
            else:
                kind, sql = statement()
                execute(connection, sql)
                ran[kind] += 1
            time.sleep(rng.random() * 0.01)
    finally:
        connection.close()
    return ran


async def commit_at_end(group: str, topic: str) -> dict[TopicPartition, int]:
    """Commits `group`'s offsets at the topic's current end, before any member starts: it then
    streams from there, and nothing published earlier (a prefill) reaches it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = dict(await consumer.end_offsets(tps))
        await consumer.commit(ends)
    finally:
        await consumer.stop()
    return ends


async def streamed_changes(
    start: dict[TopicPartition, int], table: str, ids: set[str]
) -> dict[str, list[str]]:
    """Every change of `ids` in `table` Canal published since `start`, in each partition's
    order: for the report of a failed comparison."""
    decoder = CanalDecoder()
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    await consumer.start()
    found: dict[str, list[str]] = {id_: [] for id_ in ids}
    try:
        consumer.assign(list(start))
        ends = await consumer.end_offsets(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and await behind(consumer, ends):
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    if record.value is None:
                        continue
                    position = Position(tp.topic, tp.partition, record.offset)
                    try:
                        changes = decoder.decode(record.value, position)
                    except Exception:  # noqa: BLE001 - someone else's record; not ours to judge
                        continue
                    for change in changes:
                        if change.table == table and change.pk in found:
                            found[change.pk].append(describe(change))
    finally:
        await consumer.stop()
    return found


async def behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


def describe(change: Change) -> str:
    return f"{change.position} v{change.version} {change.type} {change.row}"


async def versions(es: AsyncElasticsearch, index: str) -> dict[str, int]:
    """Every document's version, by id (the index holds at most 10,000 here)."""
    await es.indices.refresh(index=index)
    found = await es.search(index=index, size=10_000, version=True, source=False,
                            query={"match_all": {}})
    return {hit["_id"]: hit["_version"] for hit in found["hits"]["hits"]}


async def es_versions(es: AsyncElasticsearch, index: str, ids: Iterable[str]) -> dict[str, Any]:
    versions: dict[str, Any] = {}
    for id_ in ids:
        try:
            versions[id_] = (await es.get(index=index, id=id_))["_version"]
        except NotFoundError:
            versions[id_] = None
    return versions


async def differences(
    es: AsyncElasticsearch, mariadb: pymysql.connections.Connection, table: str, index: str
) -> dict[str, tuple[Any, Any]]:
    """(document, row as a document) for each id where the index and the table differ."""
    docs = {id_: {name: doc.get(name) for name in BASE_COLUMNS}
            for id_, doc in (await documents(es, index)).items()}
    rows = table_documents(mariadb, table)
    return {id_: (docs.get(id_), rows.get(id_)) for id_ in sorted(set(docs) | set(rows), key=int)
            if docs.get(id_) != rows.get(id_)}


async def explained(
    es: AsyncElasticsearch, differ: dict[str, tuple[Any, Any]], table: str, index: str,
    start: dict[TopicPartition, int], backfill: Ran,
) -> str:
    """What the report of a failed comparison shows for (at most 20 of) the differing ids."""
    shown = dict(list(differ.items())[:20])
    history = await streamed_changes(start, table, set(shown))
    versions = await es_versions(es, index, shown)
    lines = [f"{len(differ)} ids differ: {sorted(differ, key=int)[:200]}"]
    for id_, (doc, row) in shown.items():
        lines += [f"id {id_}: document (version {versions[id_]}) {doc}", f"  row {row}",
                  *(f"  streamed {entry}" for entry in history[id_])]
    return "\n".join([*lines, str(backfill)])


@pytest.mark.parametrize(("seed", "killed"), RACES)
async def test_backfill_and_stream_together_leave_the_index_equal_to_the_table(
    seed: int, killed: bool, new_service: ServiceFactory, es: AsyncElasticsearch,
    mariadb: pymysql.connections.Connection, new_table: TableFactory,
    spawn_backfill: BackfillFactory,
) -> None:
    """3,000 rows are in the table before the stream is followed, so only the backfill brings
    them; then `run`, a random workload and the backfill go at once. Whatever the
    interleaving, once both are done and the stream is caught up, the index is the table,
    by this test's own comparison and by `esupdater verify` (every documented type). With
    `killed`, the backfill is SIGKILLed midway and `--resume`d while the workload goes on.

    It tells a wrong backfill apart: one that writes unversioned fails it (stale snapshot
    rows over newer streamed ones, some 200 ids) and so does one that `create`s only the
    missing ids (rows the stream deleted brought back, some 20 ids)."""
    table = new_table(RACE_COLUMNS)
    start = await canal_ends()
    rng = random.Random(seed)
    fill(mariadb, table, [values_sql(random_values(rng, i)) for i in range(PREFILL)])
    await canal_changes(CanalDecoder(), start, table, PREFILL)  # Canal has published them
    service = await mirroring(new_service, table, topics=[CANAL_TOPIC],
                              backfill_delay=WRITE_DELAY)
    ends = await commit_at_end(service.group, CANAL_TOPIC)  # the stream never has the prefill
    assert {p: c for p, (c, _) in (await committed_and_end(KAFKA, service.group, CANAL_TOPIC))
            .items()} == {tp.partition: end for tp, end in ends.items()}
    await service.started()

    hot = Hot(service.runtime / "backfill" / f"shop.{table}.json")
    workload = asyncio.create_task(
        asyncio.to_thread(random_workload, table, seed, WORKLOAD_SECONDS, hot))
    await asyncio.sleep(START_BACKFILL_AFTER)
    backfill_args = (f"shop.{table}", "--chunk", str(CHUNK), "--rate", str(RATE))
    process = await spawn_backfill(service, *backfill_args)
    hot.started = True
    if killed:
        await eventually(lambda: past_key(hot.checkpoint, PREFILL // 3), timeout=30,
                         what=f"a checkpoint past key {PREFILL // 3} in {hot.checkpoint}")
        process.kill()
        assert (await process.finish()).returncode == -signal.SIGKILL
        process = await spawn_backfill(service, *backfill_args, "--resume")
        resumed_at = time.monotonic()
    backfilled = await process.finish(timeout=90)
    backfill_ended = hot.finished_at = time.monotonic()
    ran = await workload
    workload_ended = time.monotonic()

    assert backfilled.returncode == 0, backfilled

    async def equal() -> bool:
        return not await differences(es, mariadb, table, service.index)

    try:
        await eventually(equal, timeout=ARRIVAL_TIMEOUT, service=service,
                         what=f"index {service.index} equal to table {table}")
        # Caught up: the group has handled everything Canal had published by now, and the
        # index is still the table.
        published = {p: end for p, (_, end) in
                     (await committed_and_end(KAFKA, service.group, CANAL_TOPIC)).items()}

        async def caught_up() -> bool:
            now = await committed_and_end(KAFKA, service.group, CANAL_TOPIC)
            return all(c is not None and c >= published[p] for p, (c, _) in now.items())

        await eventually(caught_up, timeout=ARRIVAL_TIMEOUT, service=service,
                         what=f"group {service.group} past {published} on {CANAL_TOPIC}")
        assert await equal()
        # verify agrees, over every column: each streamed document (typed from Canal's
        # message) equals what the row, read from the table, gives through the handler.
        # (Without the backfill's write delay: verify runs the rows one by one.)
        service.write_handlers("table_mirror", {"table": table, "backfill_delay": 0})
        verified = await service.cli("verify", f"shop.{table}", env=MYSQL_ENV, timeout=120)
        rows = len(table_documents(mariadb, table))
        assert (verified.returncode, verify_summary_of(verified, table)) == (
            0, all_equal(rows)), verified
    except AssertionError as exc:
        differ = await differences(es, mariadb, table, service.index)
        raise AssertionError(
            f"{exc}\n{await explained(es, differ, table, service.index, start, backfilled)}\n"
            f"workload: {dict(ran)}\n{NOT_ARRIVED}") from None
    print("workload:", dict(ran))
    summary = summary_of(backfilled, table)
    assert summary.set_aside == 0, backfilled
    assert summary.written + summary.kept == summary.read, backfilled
    # Prefilled rows the workload never touched hold the backfill's write (version 0): the
    # stream did not carry the prefill, the backfill alone brought it.
    assert 0 in (await versions(es, service.index)).values()
    # The overlap happened: the backfill ended while the workload still ran, and it found
    # rows the stream had written or deleted first.
    if killed:  # the resumed run started, at least, while the workload went on
        assert resumed_at < workload_ended - 0.5, (ran, backfilled)
    else:
        assert backfill_ended < workload_ended - 0.5, (ran, backfilled)
        assert summary.kept > 0, backfilled
    assert sum(n for kind, n in ran.items() if "transactions" not in kind) > 500, ran
    # The same handler got backfilled INSERTs in the backfill, streamed changes in `run`.
    assert service.proc is not None
    seen = seen_by(service)
    assert seen.pop(service.proc.pid) <= {("INSERT", "False", "binlog"),
                                          ("UPDATE", "False", "binlog"),
                                          ("DELETE", "False", "binlog")}, seen
    # The others (backfill, its resumed run, verify) got backfilled INSERTs only.
    assert seen, "no backfill process handled a row"
    assert all(kinds == {("INSERT", "True", "table")} for kinds in seen.values()), seen
    assert len(table_documents(mariadb, table)) > PREFILL // 2  # rows were left to compare


async def past_key(checkpoint: Path, key: int) -> bool:
    """Whether the backfill checkpointed a key at or past `key` (written by rename: whole)."""
    if not checkpoint.is_file():  # noqa: ASYNC240 - a few bytes of a local file
        return False
    after = orjson.loads(checkpoint.read_bytes())["after"]  # noqa: ASYNC240
    return after is not None and after[0] >= key


# -- 3. a killed backfill resumes ----------------------------------------------------------------

RESUMED_ROWS = 5_000


async def test_a_backfill_killed_midway_resumes_after_its_checkpoint(
    new_service: ServiceFactory, es: AsyncElasticsearch,
    mariadb: pymysql.connections.Connection, new_table: TableFactory,
    spawn_backfill: BackfillFactory,
) -> None:
    table = new_table(COLUMNS, prefix="quiet_")
    fill(mariadb, table, [values_sql(generated_row(i)) for i in range(1, RESUMED_ROWS + 1)])
    # Each row waits up to 0.2 s before its write, so a chunk is in flight for that long: a
    # checkpoint taken before its chunk was acknowledged would lose rows to the kill.
    service = await mirroring(new_service, table, backfill_delay=0.2)
    checkpoint = service.runtime / "backfill" / f"shop.{table}.json"
    # About 5 s at 1,000 rows a second: killed when 1,000 rows or more are checkpointed.
    first = await spawn_backfill(service, f"shop.{table}", "--chunk", "250", "--rate", "1000")

    async def midway() -> bool:
        if not checkpoint.is_file():  # written by rename: never torn
            return False
        after = orjson.loads(checkpoint.read_bytes())["after"]
        return after is not None and after[0] >= 1000

    await eventually(midway, timeout=30, what=f"a checkpoint past key 1000 in {checkpoint}")
    first.kill()
    killed = await first.finish()
    assert killed.returncode == -signal.SIGKILL, killed
    saved = orjson.loads(checkpoint.read_bytes())
    assert saved["done"] is False, saved
    (last_key,) = saved["after"]
    assert 1000 <= last_key < RESUMED_ROWS, saved

    resumed = await service.cli("backfill", f"shop.{table}", "--resume", env=MYSQL_ENV)

    assert resumed.returncode == 0, resumed
    summary = summary_of(resumed, table)
    # Keys 1..last_key were not read again; the rest were, once. Those the killed run had
    # written past its checkpoint are kept as they are.
    assert summary.read == RESUMED_ROWS - last_key, (saved, resumed)
    assert summary.written + summary.kept == summary.read, resumed
    assert summary.set_aside == 0, resumed
    assert await differences(es, mariadb, table, service.index) == {}
    assert orjson.loads(checkpoint.read_bytes())["done"] is True
