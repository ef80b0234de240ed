"""The local stack is real: Kafka and Elasticsearch behave as servers, not stand-ins."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_streaming_bulk

from tests.integration.conftest import TopicFactory


async def test_kafka_refuses_to_auto_create_topics(kafka_bootstrap: str, unique_name: str) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await consumer.start()
    try:
        assert unique_name not in await consumer.topics()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, request_timeout_ms=3000)
        await producer.start()
        try:
            await asyncio.wait_for(producer.send_and_wait(unique_name, b"x"), timeout=5)
        except Exception:  # noqa: BLE001 - any refusal proves the point
            pass
        finally:
            await producer.stop()
        assert unique_name not in await consumer.topics()
    finally:
        await consumer.stop()


async def test_kafka_produces_and_consumes_in_partition_order(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    topic = await new_topic(partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(30):
            await producer.send(topic, f"{i}".encode(), key=f"k{i % 3}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: dict[int, list[int]] = {}
    try:
        while sum(len(v) for v in seen.values()) < 30:
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, "no records arrived within 5 s"
            for tp, records in batch.items():
                seen.setdefault(tp.partition, []).extend(int(r.value) for r in records)
    finally:
        await consumer.stop()
    assert sorted(v for values in seen.values() for v in values) == list(range(30))
    for values in seen.values():
        assert values == sorted(values)  # one key per partition: order kept


async def test_kafka_consumer_group_commit_survives_a_new_consumer(
    kafka_bootstrap: str, new_topic: TopicFactory, unique_name: str
) -> None:
    topic = await new_topic()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for i in range(10):
            await producer.send(topic, str(i).encode())
        await producer.flush()
    finally:
        await producer.stop()

    async def consume_some(limit: int, commit: bool) -> list[int]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka_bootstrap, group_id=unique_name,
            auto_offset_reset="earliest", enable_auto_commit=False,
        )
        await consumer.start()
        got: list[int] = []
        try:
            while len(got) < limit:
                record = await asyncio.wait_for(consumer.getone(), timeout=10)
                got.append(int(record.value))
            if commit:
                tp = TopicPartition(topic, 0)
                await consumer.commit({tp: got[-1] + 1})  # Kafka commits the next offset
        finally:
            await consumer.stop()
        return got

    assert await consume_some(4, commit=True) == [0, 1, 2, 3]
    assert await consume_some(2, commit=False) == [4, 5]
    assert await consume_some(6, commit=True) == [4, 5, 6, 7, 8, 9]


async def test_elasticsearch_bulk_indexes_and_reads_back(
    es: AsyncElasticsearch, unique_name: str
) -> None:
    index = unique_name
    actions = [
        {"_op_type": "index", "_index": index, "_id": str(i), "_source": {"n": i, "name": f"u{i}"}}
        for i in range(200)
    ]
    try:
        results = [
            ok
            async for ok, _ in async_streaming_bulk(es, actions, chunk_size=50, refresh="wait_for")
        ]
        assert results == [True] * 200
        count = await es.count(index=index)
        assert count["count"] == 200
        doc = await es.get(index=index, id="123")
        assert doc["_source"] == {"n": 123, "name": "u123"}
    finally:
        await es.indices.delete(index=index, ignore_unavailable=True)


async def test_elasticsearch_reports_item_errors_in_a_bulk(
    es: AsyncElasticsearch, unique_name: str
) -> None:
    index = unique_name
    await es.indices.create(index=index, mappings={"properties": {"n": {"type": "integer"}}})
    try:
        actions = [
            {"_index": index, "_id": "good", "_source": {"n": 1}},
            {"_index": index, "_id": "bad", "_source": {"n": "not a number"}},
        ]
        outcomes = [
            (ok, item)
            async for ok, item in async_streaming_bulk(
                es, actions, raise_on_error=False, refresh="wait_for"
            )
        ]
        assert [ok for ok, _ in outcomes] == [True, False]
        assert outcomes[1][1]["index"]["error"]["type"] == "document_parsing_exception"
    finally:
        await es.indices.delete(index=index, ignore_unavailable=True)
