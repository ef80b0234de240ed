"""Fixtures for tests against the real local stack (`make up`): Kafka and Elasticsearch.

These tests never skip: if the stack is down they fail, saying how to start it.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlparse

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from elasticsearch import AsyncElasticsearch

KAFKA = os.environ.get("ESUPDATER_TEST_KAFKA", "127.0.0.1:9092")
ELASTICSEARCH = os.environ.get("ESUPDATER_TEST_ELASTICSEARCH", "http://127.0.0.1:9200")

TopicFactory = Callable[..., Awaitable[str]]


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

    async def create(partitions: int = 1, name: str | None = None) -> str:
        topic = name or f"t-{uuid.uuid4().hex[:12]}"
        await admin.create_topics(
            [NewTopic(name=topic, num_partitions=partitions, replication_factor=1)]
        )
        created.append(topic)
        return topic

    try:
        yield create
    finally:
        if created:
            await admin.delete_topics(created)
        await admin.close()


# The fixtures that run the real `esupdater` process (tests/integration/service_harness.py).
from tests.integration.service_harness import canal, es_proxy, esupdater  # noqa: E402, F401
