"""Running the real `esupdater` process against the local stack: the pieces the tests share.

A test names a handler module of tests/integration/handlers and gets a working directory
holding `settings.toml` and that module as the handler package; it starts `python -m esupdater
run` there as a subprocess and watches what the user would watch: Elasticsearch, Kafka's
committed offsets, the runtime files, the log and the exit status. Every wait has a deadline;
every process is killed in teardown.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlparse

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import RecordMetadata, TopicPartition
from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError

from esupdater.canal import flat_message, protobuf_message
from tools.kafka_admin import group_call

T = TypeVar("T")
TopicFactory = Callable[..., Awaitable[str]]  # conftest's new_topic

#: The handler package each test gets in its working directory (not the repo's `handlers`).
HANDLERS_PACKAGE = "itest_handlers"
#: The handler modules a test chooses from (`new_service("users_plain")`), and the module
#: they read their index, working directory and parameters from.
HANDLER_MODULES = Path(__file__).resolve().parent / "handlers"
PARAMS_MODULE = "params"
#: The database the test rows come from.
DB = "shop"
#: Column types of the rows tests produce unless they say otherwise.
MYSQL_TYPES: dict[str, str] = {"id": "bigint(20)", "name": "varchar(64)", "v": "int(11)"}

#: The runtime files (runtime.py owns the names; repeated here as the user sees them).
PID_FILE = "esupdater.pid"
STATUS_FILE = "esupdater.status"
STATS_FILE = "esupdater.stats.json"

#: Seconds a freshly started process gets to join the group and be assigned its partitions.
START_TIMEOUT = 30.0
#: Seconds a graceful stop may take (drain_timeout below, plus closing the clients).
EXIT_TIMEOUT = 30.0
#: How often conditions are polled.
POLL_INTERVAL = 0.2


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return orjson.dumps(str(value)).decode()  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def toml_text(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """A settings file from {section: {key: value}} (only the value types settings use)."""
    lines: list[str] = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in keys.items()]
        lines.append("")
    return "\n".join(lines)


def merged(
    base: Mapping[str, Mapping[str, Any]], extra: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    out = {section: dict(keys) for section, keys in base.items()}
    for section, keys in (extra or {}).items():
        out.setdefault(section, {}).update(keys)
    return out


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment minus any ESUPDATER_* override, which would change the settings."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ESUPDATER_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"  # rich wraps at 80 columns when not on a terminal
    env.update(extra or {})
    return env


def squash(text: str) -> str:
    """Whitespace collapsed, so a message rich wrapped over lines still matches."""
    return " ".join(text.split())


@dataclass(frozen=True)
class Ran:
    """The outcome of one CLI command."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return squash(self.stdout + "\n" + self.stderr)

    def __str__(self) -> str:
        return (f"esupdater {' '.join(self.args)} -> exit {self.returncode}\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")


async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float,  # noqa: ASYNC109 - a deadline with a description, not a bare cancel
    what: str,
    service: Service | None = None,
) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s.

    With `service`, fail at once if its process exits meanwhile (no point waiting on).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if service is not None and service.exited:
            raise AssertionError(
                f"{what}: esupdater exited with {service.returncode} while waiting; "
                f"last value {last!r}"
            )
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {timeout:g} s; last value {last!r}")
        await asyncio.sleep(POLL_INTERVAL)


@dataclass
class Service:
    """One working directory (settings.toml + handler package) and its `esupdater` process."""

    workdir: Path
    topic: str
    group: str
    index: str
    bootstrap: str
    settings: dict[str, dict[str, Any]]
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0
    _log_mark: int = 0
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # -- files ---------------------------------------------------------------------------------

    @property
    def runtime(self) -> Path:
        return self.workdir / "runtime"

    @property
    def pidfile(self) -> Path:
        return self.runtime / PID_FILE

    @property
    def log_path(self) -> Path:
        return self.workdir / "esupdater.log"

    @property
    def settings_path(self) -> Path:
        return self.workdir / "settings.toml"

    def write_settings(self, extra: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.settings = merged(self.settings, extra)
        self.settings_path.write_text(toml_text(self.settings))

    def write_handlers(self, module: str, params: Mapping[str, Any] | None = None) -> None:
        """The handler package: HANDLER_MODULES/`module`.py as its `__init__`, beside it the
        params module and `params.json` (this service's index and working dir, `params`)."""
        chosen = HANDLER_MODULES / f"{module}.py"
        if module == PARAMS_MODULE or not chosen.is_file():
            known = sorted(p.stem for p in HANDLER_MODULES.glob("[!_]*.py")
                           if p.stem != PARAMS_MODULE)
            raise ValueError(f"no handler module {module!r} in {HANDLER_MODULES}: one of {known}")
        package = self.workdir / HANDLERS_PACKAGE
        package.mkdir(exist_ok=True)
        # A replaced module of the same size within the same second would pass for its cache.
        shutil.rmtree(package / "__pycache__", ignore_errors=True)
        shutil.copyfile(chosen, package / "__init__.py")
        shutil.copyfile(HANDLER_MODULES / f"{PARAMS_MODULE}.py", package / f"{PARAMS_MODULE}.py")
        given = {"index": self.index, "workdir": str(self.workdir), "params": dict(params or {})}
        (package / "params.json").write_bytes(orjson.dumps(given))

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_since_start(self) -> str:
        """The log written by the latest `start()` only."""
        return self.log()[self._log_mark:]

    def stats(self) -> dict[str, Any] | None:
        """The stats file as the running process last wrote it (None if absent or torn)."""
        try:
            value = orjson.loads((self.runtime / STATS_FILE).read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        return value if isinstance(value, dict) else None

    def pidfile_pid(self) -> int | None:
        try:
            text = self.pidfile.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def status_word(self) -> str | None:
        try:
            return (self.runtime / STATUS_FILE).read_text().strip()
        except FileNotFoundError:
            return None

    # -- the process ---------------------------------------------------------------------------

    def start(self, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """`python -m esupdater run` in the working dir, output appended to the log file."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("this Service already has a running process")
        self._log_mark = len(self.log())
        self.runs += 1
        with self.log_path.open("ab") as log:
            log.write(f"===== run {self.runs} =====\n".encode())
            self._log_mark += len(f"===== run {self.runs} =====\n")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "esupdater", "run"],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=child_env(env), start_new_session=True,  # our Ctrl-C is not its signal
            )
        self._procs.append(self.proc)
        return self.proc

    async def ready(self, timeout: float = START_TIMEOUT) -> None:  # noqa: ASYNC109
        """Wait until the process holds the pidfile and has been assigned its partitions."""
        proc = self._running()

        async def assigned() -> bool:
            return self.pidfile_pid() == proc.pid and "partitions assigned" in (
                self.log_since_start()
            )

        await eventually(assigned, timeout=timeout, what="esupdater ready", service=self)

    async def started(self) -> Service:
        self.start()
        await self.ready()
        return self

    def _running(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise RuntimeError("not started")
        return self.proc

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def send_signal(self, sig: signal.Signals) -> None:
        self._running().send_signal(sig)

    async def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:  # noqa: ASYNC109
        """The process's exit status once it has exited; fails after `timeout` s."""
        proc = self._running()

        async def gone() -> bool:
            return proc.poll() is not None

        await eventually(gone, timeout=timeout, what=f"esupdater (pid {proc.pid}) exit")
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: no drain, no commit, no pidfile removal, as a crash would leave it."""
        proc = self._running()
        proc.kill()
        proc.wait(timeout=10)

    def kill_all(self) -> None:
        """Teardown: whatever we started and is still running dies now."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    async def cli(
        self, *args: str, timeout: float = 60.0, env: Mapping[str, str] | None = None  # noqa: ASYNC109
    ) -> Ran:
        """One `python -m esupdater ARGS` in the working directory, waited for."""
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "esupdater", *args,
            cwd=self.workdir, env=child_env(env),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(child.communicate(), timeout)
        except TimeoutError:
            child.kill()
            await child.wait()
            raise AssertionError(
                f"esupdater {' '.join(args)} still running after {timeout} s"
            ) from None
        assert child.returncode is not None
        return Ran(tuple(args), child.returncode, out.decode(errors="replace"),
                   err.decode(errors="replace"))

    async def stop(self, timeout: float = EXIT_TIMEOUT) -> Ran:  # noqa: ASYNC109
        """`esupdater stop`, then the run process's own exit."""
        ran = await self.cli("stop", timeout=timeout + 10)
        if self.proc is not None:
            await self.wait_exit(timeout)
        return ran

    async def rows_done(
        self, rows: int, timeout: float = 60.0  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Wait until the stats file says `rows` row changes are done; returns the stats."""

        async def reached() -> dict[str, Any] | None:
            stats = self.stats()
            return stats if stats and stats.get("rows_done") == rows else None

        return await eventually(reached, timeout=timeout, what=f"rows_done == {rows}",
                                service=self)

    # -- Kafka's view --------------------------------------------------------------------------

    async def committed_and_end(self) -> dict[int, tuple[int | None, int]]:
        """Per partition of the topic: (the group's committed offset or None, the end offset)."""
        return await committed_and_end(self.bootstrap, self.group, self.topic)

    async def lag(self) -> dict[int, int | None]:
        """Per partition: end - committed (None when the group committed nothing there)."""
        return {p: None if c is None else end - c
                for p, (c, end) in (await self.committed_and_end()).items()}


async def committed_and_end(
    bootstrap: str, group: str, topic: str
) -> dict[int, tuple[int | None, int]]:
    """The group's committed offsets against the end offsets, read as any Kafka tool would."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)  # no group: reads, never joins
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        partitions = [p["partition"] for p in described["partitions"]]
        assert partitions, f"topic {topic} has no partitions: {described}"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps)
        committed = await group_call(
            lambda: admin.list_consumer_group_offsets(group, partitions=tps))
    finally:
        await admin.close()
        await consumer.stop()
    result: dict[int, tuple[int | None, int]] = {}
    for tp in tps:
        meta = committed.get(tp)
        offset = None if meta is None or meta.offset < 0 else meta.offset
        result[tp.partition] = (offset, ends[tp])
    return result


async def read_records(bootstrap: str, topic: str, count: int, *,
                       service: Service | None = None) -> list[Any]:
    """The first `count` records of `topic` (a dead-letter topic, say), read from the start."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got: list[Any] = []
    try:
        async def enough() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            got.extend(r for records in batch.values() for r in records)
            return len(got) >= count

        await eventually(enough, timeout=30, what=f"{count} records in {topic}",
                         service=service)
    finally:
        await consumer.stop()
    return got


class CanalProducer:
    """Produces Canal records as Canal's Kafka producer would, keyed by primary key."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one record; await the returned future for its offset (or `flush()`)."""
        return await self.producer.send(topic, value, key=key, partition=partition)

    async def send_and_wait(self, topic: str, value: bytes, *, key: bytes | None = None,
                            partition: int | None = None) -> RecordMetadata:
        return await (await self.send(topic, value, key=key, partition=partition))

    async def rows(
        self,
        topic: str,
        table: str,
        type: str,
        rows: Sequence[Mapping[str, str | None]],
        *,
        old: Sequence[Mapping[str, str | None]] | None = None,
        form: Literal["flat", "protobuf"] = "flat",
        database: str = DB,
        mysql_types: Mapping[str, str] = MYSQL_TYPES,
        key: str | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """One Kafka record holding `rows` of one table, keyed by the first row's id.

        Canal's partitionHash sends one row's changes to one partition; keying by the
        primary key does the same here.
        """
        build = flat_message if form == "flat" else protobuf_message
        value = build(database, table, type, list(rows), old=old, mysql_types=mysql_types)
        if key is None and rows:
            key = f"{database}.{table}:{rows[0].get('id')}"
        return await self.send(
            topic, value, key=key.encode() if key else None, partition=partition
        )

    async def ddl(self, topic: str, table: str, type: str, sql: str, *,
                  database: str = DB) -> asyncio.Future[RecordMetadata]:
        value = flat_message(database, table, type, [], mysql_types={}, is_ddl=True, sql=sql,
                             pk_names=())
        return await self.send(topic, value, key=f"{database}.{table}".encode())

    async def flush(self) -> None:
        await self.producer.flush()


def unique_topic() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def row(id: int, name: str | None = None, v: int = 0) -> dict[str, str | None]:
    """A row of the default test table as Canal has it: every value a string."""
    return {"id": str(id), "name": f"n{id}" if name is None else name, "v": str(v)}



# -- the local stack's servers ------------------------------------------------------------------

STACK_SCRIPT = Path(__file__).resolve().parents[2] / "stack" / "stack.sh"


async def stack(action: Literal["start", "stop"], server: str) -> None:
    """`stack/stack.sh start|stop SERVER`, for fault tests: kafka, elasticsearch, mariadb, canal."""
    proc = await asyncio.create_subprocess_exec(
        "bash", str(STACK_SCRIPT), action, server,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(180):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, f"stack.sh {action} {server} failed:\n{out.decode()}"

# -- Elasticsearch -------------------------------------------------------------------------------


#: Seconds to wait out a shard that is still starting: the service creates indices on its
#: first write, and reads in that moment get 503 no_shard_available_action_exception.
SHARD_START_TIMEOUT = 15.0


async def settled(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, retried while Elasticsearch answers 503 (a freshly created index)."""
    deadline = time.monotonic() + SHARD_START_TIMEOUT
    while True:
        try:
            return await call()
        except ApiError as exc:
            if exc.status_code != 503 or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(POLL_INTERVAL)


async def doc_count(es: AsyncElasticsearch, index: str, query: dict[str, Any] | None = None) -> int:
    """Documents in `index` right now (refreshed first); 0 while the index does not exist."""

    async def count() -> int:
        await es.indices.refresh(index=index)
        if query:
            return int((await es.count(index=index, query=query))["count"])
        return int((await es.count(index=index))["count"])

    try:
        return await settled(count)
    except NotFoundError:
        return 0


async def source(es: AsyncElasticsearch, index: str, id: str) -> dict[str, Any] | None:
    """The document's source (a realtime GET), or None if it or its index does not exist."""
    try:
        doc = await settled(lambda: es.get(index=index, id=id))
    except NotFoundError:
        return None
    return dict(doc["_source"])


async def wait_count(
    es: AsyncElasticsearch, index: str, count: int, *, timeout: float = 60.0,  # noqa: ASYNC109
    service: Service | None = None,
) -> None:
    """Wait until `index` holds exactly `count` documents."""

    async def reached() -> bool:
        return await doc_count(es, index) == count

    try:
        await eventually(reached, timeout=timeout, what=f"{count} docs in {index}",
                         service=service)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; count now {await doc_count(es, index)}") from None


# -- fixtures --------------------------------------------------------------------------------------

ServiceFactory = Callable[..., Awaitable[Service]]


@pytest.fixture
async def canal(kafka_bootstrap: str) -> AsyncIterator[CanalProducer]:
    """A producer that waits for the broker's ack of every record it flushes."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        yield CanalProducer(producer)
    finally:
        await producer.stop()


@pytest.fixture
async def new_service(
    tmp_path: Path,
    kafka_bootstrap: str,
    new_topic: TopicFactory,
    unique_name: str,
    es: AsyncElasticsearch,
) -> AsyncIterator[ServiceFactory]:
    """Makes `Service`s (not started): a topic, a group, an index and a working dir each.

    `await new_service("users_plain", partitions=3, settings={"dispatch": {...}})`, the first
    argument a module of HANDLER_MODULES, `params=` what it reads with `param(...)`. Teardown
    kills what is still running, prints each log (pytest shows it for failed tests) and
    deletes the indices whose names start with the test's unique name.
    """
    made: list[Service] = []

    async def make(
        handlers: str,
        *,
        params: Mapping[str, Any] | None = None,
        partitions: int = 1,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        joining: Service | None = None,
        create_topic: bool = True,
    ) -> Service:
        """`joining`: another member of that service's group (same topic, group and index).

        `create_topic=False` leaves the topic to the test (`new_topic(name=service.topic)`).
        """
        n = len(made)
        workdir = tmp_path / f"svc{n}"
        workdir.mkdir()
        if joining is not None:
            service = Service(workdir, joining.topic, joining.group, joining.index,
                              kafka_bootstrap, merged(joining.settings, settings))
            service.write_settings()
            service.write_handlers(handlers, params)
            made.append(service)
            return service
        topic = await new_topic(partitions=partitions) if create_topic else unique_topic()
        group = f"g-{uuid.uuid4().hex[:12]}"
        base: dict[str, dict[str, Any]] = {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap, "topics": [topic], "group_id": group,
                "commit_interval_ms": 200,
                # A SIGKILLed member is evicted after this; the broker's minimum is 6 s.
                "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
            },
            "runtime": {
                "dir": "runtime", "check_status_interval_seconds": 0.2,
                "stats_interval_seconds": 0.2, "stop_timeout_seconds": 30.0,
                "drain_timeout_seconds": 20.0,
            },
            "handlers": {"package": HANDLERS_PACKAGE},
        }
        service = Service(workdir, topic, group, unique_name if n == 0 else f"{unique_name}-{n}",
                          kafka_bootstrap, merged(base, settings))
        service.write_settings()
        service.write_handlers(handlers, params)
        made.append(service)
        return service

    try:
        yield make
    finally:
        for service in made:
            service.kill_all()
            print(f"\n===== {service.log_path} (topic {service.topic}, group {service.group})")
            print(service.log()[-20_000:])
        try:
            found = await es.indices.get(index=f"{unique_name}*", allow_no_indices=True)
            if found:
                await es.indices.delete(index=",".join(found), ignore_unavailable=True)
        except NotFoundError:
            pass


class TcpProxy:
    """A loopback relay to a server that a test can cut and restore.

    It stands in for "Elasticsearch is down" without touching the shared stack: `down()`
    closes the listener and every relayed connection (clients get refused), `up()` listens
    on the same port again.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def stall(self) -> None:
        """Keep connections open but hold every byte: a server that stopped answering."""
        self._flowing.clear()

    def flow(self) -> None:
        """Deliver what was held and relay normally again."""
        self._flowing.set()

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    await self._flowing.wait()
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}


@pytest.fixture
async def es_proxy(es_url: str) -> AsyncIterator[TcpProxy]:
    """A relay to Elasticsearch the test can cut (`down`) or freeze (`stall`)."""
    target = urlparse(es_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 9200)
    await proxy.up()
    try:
        yield proxy
    finally:
        proxy.flow()
        await proxy.down()
