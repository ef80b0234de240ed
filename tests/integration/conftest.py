"""Fixtures for tests against the real local stack (`make up`): Kafka and Elasticsearch.

These tests never skip: if the stack is down they fail, saying how to start it.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from urllib.parse import urlparse

import pymysql
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from elasticsearch import AsyncElasticsearch

from tools.local_stack import (
    ELASTICSEARCH,
    KAFKA,
    MARIADB,
    MARIADB_DATABASE,
    MARIADB_PASSWORD,
    MARIADB_USER,
)

TopicFactory = Callable[..., Awaitable[str]]
TableFactory = Callable[..., str]  # (columns, *, prefix="t_") -> table name


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def stack_is_up() -> None:
    kafka_host, kafka_port = KAFKA.rsplit(":", 1)
    es = urlparse(ELASTICSEARCH)
    missing = [
        name
        for name, ok in (
            (f"Kafka at {KAFKA}", _reachable(kafka_host, int(kafka_port))),
            (f"Elasticsearch at {ELASTICSEARCH}", _reachable(es.hostname or "", es.port or 9200)),
        )
        if not ok
    ]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not reachable: start the stack with `make up`")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return KAFKA


@pytest.fixture(scope="session")
def es_url() -> str:
    return ELASTICSEARCH


@pytest.fixture
async def es() -> AsyncIterator[AsyncElasticsearch]:
    client = AsyncElasticsearch(ELASTICSEARCH, request_timeout=30)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def unique_name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def new_topic() -> AsyncIterator[TopicFactory]:
    """Creates uniquely named topics (auto-creation is off) and deletes them afterwards."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    created: list[str] = []

    async def create(
        partitions: int = 1, name: str | None = None, configs: Mapping[str, str] | None = None
    ) -> str:
        """`configs`: the topic's own settings (`{"max.message.bytes": ...}`)."""
        topic = name or f"t-{uuid.uuid4().hex[:12]}"
        await admin.create_topics([NewTopic(name=topic, num_partitions=partitions,
                                            replication_factor=1,
                                            topic_configs=dict(configs or {}))])
        created.append(topic)
        return topic

    try:
        yield create
    finally:
        if created:
            await admin.delete_topics(created)
        await admin.close()


def connect_mariadb() -> pymysql.connections.Connection:
    """A connection to the `shop` database Canal follows: autocommit, utf8mb4, UTC.

    UTC so TIMESTAMP values read back as written: Canal formats them in its own zone (UTC).
    """
    host, port = MARIADB.rsplit(":", 1)
    try:
        return pymysql.connect(
            host=host, port=int(port), user=MARIADB_USER, password=MARIADB_PASSWORD,
            database=MARIADB_DATABASE, charset="utf8mb4", autocommit=True,
            cursorclass=pymysql.cursors.DictCursor, init_command="SET time_zone = '+00:00'",
        )
    except pymysql.err.OperationalError as exc:
        pytest.fail(f"MariaDB at {MARIADB} not usable ({exc}): start the stack with `make up`")


@pytest.fixture
def mariadb() -> Iterator[pymysql.connections.Connection]:
    """`connect_mariadb()`, closed after the test."""
    connection = connect_mariadb()
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def new_table(
    mariadb: pymysql.connections.Connection,
) -> Iterator[TableFactory]:
    """Makes uniquely named tables in `shop`, dropped afterwards: `new_table("id INT, ...")`.

    Unique names keep apart the tests that share Canal's topics.
    """
    created: list[str] = []

    def create(columns: str, *, prefix: str = "t_") -> str:
        """`prefix="quiet_"`: a table Canal does not publish (stack/canal.sh). Use it
        whenever a test does not need the binlog: Canal reads a table's columns when it
        parses its rows, and one dropped here before a lagging Canal got to its rows stops
        that Canal instance for good ("Table ... doesn't exist")."""
        name = f"{prefix}{uuid.uuid4().hex[:12]}"
        with mariadb.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {name} ({columns})")
        created.append(name)
        return name

    try:
        yield create
    finally:
        with mariadb.cursor() as cursor:
            for name in created:
                cursor.execute(f"DROP TABLE IF EXISTS {name}")


# The fixtures that run the real `esupdater` process (tests/integration/service_harness.py).
from tests.integration.service_harness import canal, es_proxy, new_service  # noqa: E402, F401
