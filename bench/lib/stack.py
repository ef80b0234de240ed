"""The local stack as the benchmark uses it: its own topics, groups and indices, cleaned up after.

Every name carries the run id so the benchmark never touches what tests or other people use
on the same Kafka and Elasticsearch at the same time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.admin import DeleteGroupsRequest
from aiokafka.structs import TopicPartition
from elasticsearch import ApiError, AsyncElasticsearch, TransportError

from esupdater.clients import make_consumer
from esupdater.settings import KafkaSettings
from tools.kafka_admin import group_call
from tools.local_stack import ELASTICSEARCH, KAFKA

#: The users index as search would want it; `strict` so a typing regression fails loudly.
USERS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "id": {"type": "long"},
        "name": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
        "email": {"type": "keyword"},
        "city": {"type": "keyword"},
        "balance": {"type": "double"},  # scaled_float needs mapper-extras (not in the zip)
        "created_at": {"type": "date"},
        "updated_at": {"type": "date"},
        "vip": {"type": "byte"},
    },
}

#: Contender D indexes Canal's strings untyped, as a user without a typing layer would: the
#: same mapping, its dates also read in MySQL's text form (numbers are coerced anyway).
RAW_DATES_MAPPING: dict[str, Any] = {
    **USERS_MAPPING,
    "properties": {
        name: {**spec, "format": "yyyy-MM-dd HH:mm:ss||strict_date_optional_time||epoch_millis"}
        if spec["type"] == "date" else spec
        for name, spec in USERS_MAPPING["properties"].items()
    },
}

#: Same for every variant: no refresh while writing (fair), one shard, no replica (one node).
INDEX_SETTINGS: dict[str, Any] = {
    "number_of_shards": 1,
    "number_of_replicas": 0,
    "refresh_interval": "-1",
}


@dataclass
class Stack:
    """Admin handles plus what this run created, so `close()` can delete all of it."""

    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))
    admin: AIOKafkaAdminClient | None = None
    es: AsyncElasticsearch | None = None
    topics: list[str] = field(default_factory=list)
    indices: list[str] = field(default_factory=list)

    def name(self, kind: str) -> str:
        return f"bench-{self.run_id}-{kind}"

    async def start(self) -> None:
        self.admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
        await self.admin.start()
        self.es = AsyncElasticsearch(ELASTICSEARCH, request_timeout=120)

    async def create_topic(self, kind: str, partitions: int) -> str:
        topic = self.name(kind)
        assert self.admin is not None
        await self.admin.create_topics([NewTopic(topic, partitions, 1)])
        self.topics.append(topic)
        return topic

    async def create_index(
        self, kind: str, *, mappings: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> str:
        index = self.name(kind)
        assert self.es is not None
        await self.es.indices.create(
            index=index, settings=INDEX_SETTINGS if settings is None else settings,
            mappings=USERS_MAPPING if mappings is None else mappings)
        self.indices.append(index)
        return index

    async def bulk_stats(self, index: str) -> tuple[int, int]:
        """(bulk requests, actions) Elasticsearch counted for `index`: with one shard a bulk
        request is one shard-level bulk operation; actions are its index + delete operations."""
        assert self.es is not None
        stats = await self.es.indices.stats(index=index, metric="bulk,indexing")
        primaries = stats["indices"][index]["primaries"]
        indexing = primaries["indexing"]
        return (int(primaries["bulk"]["total_operations"]),
                int(indexing["index_total"]) + int(indexing["delete_total"]))

    async def count(self, index: str) -> int:
        assert self.es is not None
        await self.es.indices.refresh(index=index)
        return int((await self.es.count(index=index))["count"])

    async def drop_index(self, index: str) -> None:
        assert self.es is not None
        await self.es.indices.delete(index=index, ignore_unavailable=True)
        if index in self.indices:
            self.indices.remove(index)

    async def committed(self, group: str, partitions: list[TopicPartition]) -> int:
        """Sum of the group's committed offsets over `partitions` (0 where none yet)."""
        assert self.admin is not None
        admin = self.admin
        offsets = await group_call(
            lambda: admin.list_consumer_group_offsets(group, partitions=partitions))
        return sum(max(meta.offset, 0) for meta in offsets.values())

    async def close(self) -> None:
        """Deletes what this run created, each part on its own: a server that is down (the
        stack is shared; fault tests stop servers) leaves its part behind, named on stderr,
        and never hides the error that ended the run."""
        if self.es is not None:
            try:
                for index in list(self.indices):
                    await self.drop_index(index)
            except (ApiError, TransportError) as exc:
                _left_behind("indices", self.indices, exc)
            await self.es.close()
        if self.admin is not None:
            try:
                if self.topics:
                    await self.admin.delete_topics(self.topics)
            except (KafkaError, OSError) as exc:
                _left_behind("topics", self.topics, exc)
            try:
                refused = await self.delete_groups()
                if refused:
                    _left_behind("consumer groups", refused, RuntimeError("refused"))
            except (KafkaError, OSError) as exc:
                _left_behind("consumer groups", [self.name("*")], exc)
            await self.admin.close()

    async def delete_groups(self) -> list[str]:
        """Deletes this run's consumer groups and their offsets (Kafka would keep an empty
        group's offsets for its retention, a week by default); returns those the coordinator
        refused, with the reason. aiokafka's admin client has no call for it, so each goes to
        its group's coordinator as a DeleteGroups request."""
        assert self.admin is not None
        admin = self.admin
        refused = []
        for group in run_groups(await admin.list_consumer_groups(), self.name("")):
            coordinator = await group_call(partial(admin.find_coordinator, group))
            answer = await admin._send_request_to_node(coordinator, DeleteGroupsRequest([group]))
            refused += [f"{name} ({for_code(code).__name__})"
                        for name, code in answer.results if code]
        return refused


def run_groups(listed: Iterable[tuple[Any, ...]], prefix: str) -> list[str]:
    """The groups a run created, from `list_consumer_groups`'s (name, protocol) tuples: every
    one it names starts with its `bench-<run id>-` prefix; anyone else's is left alone."""
    return sorted({str(group[0]) for group in listed if str(group[0]).startswith(prefix)})


def _left_behind(what: str, names: list[str], exc: BaseException) -> None:
    print(f"bench: could not delete {what} {', '.join(names)}: {exc}", file=sys.stderr)


async def end_offsets(topic: str, partitions: int) -> dict[TopicPartition, int]:
    consumer = make_consumer(KafkaSettings(bootstrap_servers=KAFKA), group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


def peak_rss_mb(pid: int) -> float:
    """The kernel's high-water mark of a process's resident set (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return 0.0
