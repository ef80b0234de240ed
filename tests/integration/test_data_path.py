"""Canal records in, documents out: decoding, splitting, routing and the writes handlers make."""

from __future__ import annotations

from elasticsearch import AsyncElasticsearch

from tests.integration.service_harness import (
    CanalProducer,
    ServiceFactory,
    doc_count,
    eventually,
    row,
    settled,
    source,
    wait_count,
)


async def test_one_record_with_ten_rows_becomes_ten_documents(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("mirror_fields")
    sent = await canal.rows(service.topic, "users", "INSERT", [row(i, v=i) for i in range(10)])
    offset = (await sent).offset

    await service.started()
    await wait_count(es, service.index, 10, service=service)

    for i in range(10):
        doc = await source(es, service.index, str(i))
        assert doc is not None
        assert (doc["id"], doc["name"], doc["v"]) == (i, f"n{i}", i)  # typed from mysqlType
        assert doc["offset"] == offset  # all ten from the one record


async def test_protobuf_records_are_applied_like_flat_ones(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("mirror_fields")
    await canal.rows(service.topic, "users", "INSERT", [row(i, v=i) for i in range(5)],
                     form="protobuf")
    await canal.rows(service.topic, "users", "INSERT", [row(i, v=i) for i in range(5, 10)])
    await canal.rows(service.topic, "users", "UPDATE", [row(3, v=33)], old=[{"v": "3"}],
                     form="protobuf")
    await canal.rows(service.topic, "users", "DELETE", [row(4, v=4)], form="protobuf")
    await canal.flush()

    await service.started()
    await service.rows_done(12)

    assert await doc_count(es, service.index) == 9
    doc = await source(es, service.index, "3")
    assert doc is not None
    assert doc["type"] == "UPDATE"
    assert doc["old"] == {"v": 3}
    assert doc["changed"] == ["v"]
    assert await source(es, service.index, "4") is None
    assert (await source(es, service.index, "0")) is not None
    protobuf_doc = await source(es, service.index, "1")
    flat_doc = await source(es, service.index, "6")
    assert protobuf_doc is not None
    assert flat_doc is not None
    assert set(protobuf_doc) == set(flat_doc)  # the same Change fields either way
    assert (protobuf_doc["id"], protobuf_doc["name"], protobuf_doc["v"]) == (1, "n1", 1)


async def test_a_glob_route_receives_every_sharded_table(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("orders_glob")
    for shard in range(4):
        for i in range(3):
            await canal.rows(service.topic, f"orders_{shard}", "INSERT", [row(i)])
    await canal.rows(service.topic, "orders", "INSERT", [row(99)])  # no suffix: no match
    await canal.rows(service.topic, "order_items_0", "INSERT", [row(98)])
    await canal.flush()

    await service.started()
    await wait_count(es, service.index, 12, service=service)

    async def all_read() -> bool:
        return (service.stats() or {}).get("unrouted") == 2

    await eventually(all_read, timeout=20, what="2 unrouted rows counted", service=service)
    assert await doc_count(es, service.index) == 12
    assert await source(es, service.index, "orders_3-2") == {"table": "orders_3"}


async def test_an_insert_only_handler_never_sees_updates_or_deletes(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("insert_only")
    await canal.rows(service.topic, "users", "INSERT", [row(1, v=1), row(2, v=1)])
    await canal.rows(service.topic, "users", "UPDATE", [row(1, v=2)], old=[{"v": "1"}])
    await canal.rows(service.topic, "users", "DELETE", [row(2, v=1)])
    await canal.flush()

    await service.started()
    await wait_count(es, service.index + "-all", 4, service=service)  # everything was read

    assert await doc_count(es, service.index) == 2
    assert await source(es, service.index, "1") == {"type": "INSERT", "v": 1}
    assert await source(es, service.index, "2") == {"type": "INSERT", "v": 1}


async def test_ddl_reaches_only_the_handlers_that_ask_for_it(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("ddl_routes")
    alter = await (await canal.ddl(service.topic, "users", "ALTER",
                                   "ALTER TABLE users ADD COLUMN age int"))
    create = await (await canal.ddl(service.topic, "audit", "CREATE",
                                    "CREATE TABLE audit (id bigint primary key)"))
    truncate = await (await canal.ddl(service.topic, "users", "TRUNCATE", "TRUNCATE users"))
    insert = await (await canal.rows(service.topic, "users", "INSERT", [row(1)]))

    await service.started()
    await wait_count(es, service.index, 5, service=service)

    assert await source(es, service.index, f"ddl-{alter.offset}") == {
        "type": "ALTER", "sql": "ALTER TABLE users ADD COLUMN age int", "is_ddl": True}
    assert (await source(es, service.index, f"ddl-{create.offset}") or {})["type"] == "CREATE"
    assert (await source(es, service.index, f"ddl-{truncate.offset}") or {})["type"] == "TRUNCATE"
    assert await source(es, service.index, f"alter-{alter.offset}") == {"type": "ALTER"}
    assert await source(es, service.index, f"row-{insert.offset}") == {"type": "INSERT"}
    # The default types (INSERT, UPDATE, DELETE) never include DDL.
    for ddl in (alter, create, truncate):
        assert await source(es, service.index, f"row-{ddl.offset}") is None
    assert await source(es, service.index, f"alter-{truncate.offset}") is None


async def test_rows_of_tables_without_a_handler_are_skipped_and_counted_as_unrouted(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("mirror_fields")
    await canal.rows(service.topic, "users", "INSERT", [row(1)])
    await canal.rows(service.topic, "sessions", "INSERT", [row(i) for i in range(3)])
    await canal.rows(service.topic, "users", "INSERT", [row(2)], database="other")
    await canal.rows(service.topic, "users", "INSERT", [row(3)])
    await canal.flush()

    await service.started()
    await wait_count(es, service.index, 2, service=service)

    async def counted() -> dict[str, object] | None:
        stats = service.stats()
        # A document is visible before the service has read Elasticsearch's answer, so
        # rows_done is waited for too.
        done = stats and stats.get("unrouted") == 4 and stats.get("rows_done") == 2
        return stats if done else None

    await eventually(counted, timeout=20, what="unrouted == 4 and rows_done == 2",
                     service=service)
    status = await service.cli("status")
    assert "unrouted 4" in status.output, status
    # Skipped records are done records: the commit passes them.
    await service.stop()
    assert await service.lag() == {0: 0}


async def test_an_update_carries_the_old_values_of_the_changed_columns(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("mirror_fields")
    await canal.rows(service.topic, "users", "INSERT", [row(1, name="ann", v=1)])
    await canal.rows(service.topic, "users", "UPDATE", [row(1, name="anna", v=2)],
                     old=[{"name": "ann", "v": "1"}])
    await canal.flush()

    await service.started()

    async def updated() -> dict[str, object] | None:
        doc = await source(es, service.index, "1")
        return doc if doc and doc["type"] == "UPDATE" else None

    doc = await eventually(updated, timeout=30, what="UPDATE applied", service=service)
    assert doc["name"] == "anna"
    assert doc["v"] == 2
    assert doc["old"] == {"name": "ann", "v": 1}  # typed like the row
    assert doc["changed"] == ["name", "v"]


async def test_a_delete_removes_the_document_and_deleting_a_missing_one_is_fine(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("mirror_fields")
    await canal.rows(service.topic, "users", "INSERT", [row(1), row(2)])
    await canal.rows(service.topic, "users", "DELETE", [row(1)])
    await canal.rows(service.topic, "users", "DELETE", [row(404)])  # never existed
    await canal.flush()

    await service.started()

    stats = await service.rows_done(4)
    assert stats["handler_errors"] == 0
    assert stats["rejected"] == 0
    assert stats["dead_lettered"] == 0
    assert await source(es, service.index, "1") is None
    assert await source(es, service.index, "2") is not None
    assert await doc_count(es, service.index) == 1
    await service.stop()
    assert await service.lag() == {0: 0}


async def test_a_handler_awaiting_its_writes_gets_elasticsearchs_whole_item(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    """The handler only awaits its writes, so its batch steps it (esupdater.driven): the item
    it gets is still the whole answer (index, id, version, result), not only the status."""
    service = await new_service("item_reader")
    for i in range(1, 4):
        await canal.rows(service.topic, "users", "INSERT", [row(i)])
    await canal.rows(service.topic, "users", "UPDATE", [row(2, v=1)], old=[{"v": "0"}])
    await canal.flush()
    await service.started()
    await service.rows_done(4)

    await settled(lambda: es.indices.refresh(index=f"{service.index}-items"))
    found = await settled(lambda: es.search(index=f"{service.index}-items", size=10))
    seen = {hit["_id"]: hit["_source"] for hit in found["hits"]["hits"]}
    assert seen == {
        "1": {"index": service.index, "id": "1", "version": 1, "result": "created",
              "status": 201},
        "2": {"index": service.index, "id": "2", "version": 2, "result": "updated",
              "status": 200},
        "3": {"index": service.index, "id": "3", "version": 1, "result": "created",
              "status": 201},
    }
