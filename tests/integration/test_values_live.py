"""Values that must arrive exactly: DECIMAL digits and BINARY(n) bytes, in real Elasticsearch and
through real Canal (MariaDB -> Canal -> Kafka -> `esupdater run` -> Elasticsearch).

The local Elasticsearch (the integ-test-zip distribution) has no mapper-extras module, so no
`scaled_float`; `double` stands in for it: both parse the JSON number as a double.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import orjson
import pymysql
import pytest
from elasticsearch import AsyncElasticsearch, BadRequestError

from esupdater.clients import make_elasticsearch
from esupdater.settings import ElasticsearchSettings
from esupdater.testing import MemorySink
from tests.integration.conftest import TableFactory
from tests.integration.service_harness import (
    CanalProducer,
    ServiceFactory,
    eventually,
    row,
    wait_count,
)
from tests.integration.test_canal_live import (
    CANAL_PB_TOPIC,
    CANAL_TOPIC,
    execute,
    following,
    wait_changes,
    wait_mirrored,
)
from tools.local_stack import ELASTICSEARCH

BIG = Decimal("123456789012345678.91")
FINE = Decimal("999999999999.999999")
TINY = Decimal("0.0000001000")
HUGE = Decimal("1E+999999")


def raw_get(path: str, body: dict[str, Any] | None = None) -> str:
    """Elasticsearch's answer as text, unparsed: a JSON reader would turn digits into floats."""
    request = urllib.request.Request(
        f"{ELASTICSEARCH}{path}", data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST" if body else "GET",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return str(answer.read().decode())


def source_text(index: str, doc_id: str) -> str:
    """The document's `_source` exactly as Elasticsearch keeps it."""
    return raw_get(f"/{index}/_source/{doc_id}")


@pytest.fixture
async def client(unique_name: str) -> AsyncIterator[AsyncElasticsearch]:
    """The client `esupdater run` builds (clients.make_elasticsearch); drops the test's indices."""
    es = make_elasticsearch(ElasticsearchSettings(hosts=[ELASTICSEARCH]))
    try:
        yield es
    finally:
        await es.options(ignore_status=404).indices.delete(index=f"{unique_name}*")
        await es.close()


async def test_decimals_keep_every_digit_in_source_and_in_keyword_fields(
    client: AsyncElasticsearch, unique_name: str
) -> None:
    index = f"{unique_name}-decimals"
    await client.indices.create(index=index, mappings={"properties": {
        "kw": {"type": "keyword"}, "kw_fine": {"type": "keyword"}, "kw_tiny": {"type": "keyword"},
        "num": {"type": "double"},
    }})  # everything else is mapped dynamically
    doc = {"kw": BIG, "kw_fine": FINE, "kw_tiny": TINY, "num": BIG, "dyn": BIG, "dyn_fine": FINE,
           "price": Decimal("12.50")}
    await client.index(index=index, id="1", document=doc, refresh=True)

    text = source_text(index, "1")
    for name, digits in [("kw", "123456789012345678.91"), ("kw_fine", "999999999999.999999"),
                         ("kw_tiny", "0.0000001000"), ("num", "123456789012345678.91"),
                         ("dyn", "123456789012345678.91"), ("dyn_fine", "999999999999.999999"),
                         ("price", "12.50")]:
        assert f'"{name}":{digits}' in text, text

    def hits(query: dict[str, Any]) -> list[str]:
        found = json.loads(raw_get(f"/{index}/_search", {"query": query}))
        return [hit["_id"] for hit in found["hits"]["hits"]]

    # A keyword field holds MySQL's text of the value: a term query finds it by every digit.
    assert hits({"term": {"kw": "123456789012345678.91"}}) == ["1"]
    assert hits({"term": {"kw_fine": "999999999999.999999"}}) == ["1"]
    assert hits({"term": {"kw_tiny": "0.0000001000"}}) == ["1"]
    assert hits({"term": {"kw": "123456789012345680"}}) == []  # what a float would have made
    # Numeric fields (double here, scaled_float, the dynamic float) search by their double.
    assert hits({"range": {"num": {"gte": 1.2345678e17, "lte": 1.2345679e17}}}) == ["1"]
    assert hits({"range": {"dyn_fine": {"gte": 999999999999, "lte": 1000000000001}}}) == ["1"]
    mapping = await client.indices.get_mapping(index=index)
    assert mapping[index]["mappings"]["properties"]["dyn"]["type"] == "float"

    # What MemorySink stores is what Elasticsearch keeps, number for number.
    sink = MemorySink()
    await sink.execute({"_op_type": "index", "_index": index, "_id": "1", "_source": doc})
    stored = sink.documents[index]["1"]
    assert {name: Decimal(str(value)) for name, value in stored.items()} == json.loads(
        text, parse_float=Decimal)
    assert stored["kw"] == BIG


async def test_a_decimal_no_double_holds_is_kept_by_a_keyword_field_and_refused_by_numbers(
    client: AsyncElasticsearch, unique_name: str
) -> None:
    index = f"{unique_name}-huge"
    await client.indices.create(index=index, mappings={"properties": {
        "kw": {"type": "keyword"}, "num": {"type": "double"},
    }})

    await client.index(index=index, id="1", document={"kw": HUGE}, refresh=True)
    assert source_text(index, "1") == '{"kw":1E+999999}'
    for field in ("num", "dyn"):  # not stored as null, as the float conversion did
        with pytest.raises(BadRequestError, match="finite"):
            await client.index(index=index, id=field, document={field: HUGE})


@pytest.mark.parametrize("topic", [CANAL_TOPIC, CANAL_PB_TOPIC], ids=["flat", "protobuf"])
async def test_a_decimal_from_mariadb_reaches_elasticsearch_with_every_digit(
    topic: str, new_service: ServiceFactory, es: AsyncElasticsearch,
    mariadb: pymysql.connections.Connection, new_table: TableFactory,
) -> None:
    table = new_table("id INT PRIMARY KEY, big DECIMAL(20,2), fine DECIMAL(18,6), "
                      "tiny DECIMAL(20,10), neg DECIMAL(65,30)")
    service = await following(new_service, "canal_rows", table, topic)
    neg = "-" + "9" * 35 + "." + "9" * 30
    execute(mariadb, f"INSERT INTO {table} VALUES "
                     f"(1, {BIG}, {FINE}, {TINY}, {neg}), (2, 0.50, 0, 0, 0)")

    await wait_mirrored(es, mariadb, table, service)
    first = source_text(service.index, "1")
    assert '"big":123456789012345678.91,"fine":999999999999.999999' in first
    # Canal's text may drop zeros of the scale (0.00 -> "0.0"): the same numbers, exactly.
    assert json.loads(first, parse_float=Decimal) == {
        "id": 1, "big": BIG, "fine": FINE, "tiny": TINY, "neg": Decimal(neg)}
    second = json.loads(source_text(service.index, "2"), parse_float=Decimal)
    assert second == {"id": 2, "big": Decimal("0.5"), "fine": 0, "tiny": 0, "neg": 0}


@pytest.mark.parametrize("topic", [CANAL_TOPIC, CANAL_PB_TOPIC], ids=["flat", "protobuf"])
async def test_binary_keeps_its_trailing_zero_bytes_and_varbinary_its_length(
    topic: str, new_service: ServiceFactory, es: AsyncElasticsearch,
    mariadb: pymysql.connections.Connection, new_table: TableFactory,
) -> None:
    table = new_table("id INT PRIMARY KEY, b BINARY(4), vb VARBINARY(4), bl BLOB")
    service = await following(new_service, "canal_bytes", table, topic)
    execute(
        mariadb,
        f"INSERT INTO {table} VALUES (1, x'00000000', x'0000', x'00'), "
        f"(2, x'01000000', x'0100', x'0100'), (3, x'FF00FF00', x'FF', x'FF00'), "
        f"(4, NULL, NULL, NULL), (5, x'00000001', x'', x'')",
        f"UPDATE {table} SET b = x'AB000000' WHERE id = 1",
    )

    await wait_changes(es, service, 6)
    found = await es.search(index=service.index, size=10, query={"match_all": {}})
    logged = {(hit["_source"]["id"], hit["_source"]["type"]): hit["_source"]
              for hit in found["hits"]["hits"]}
    rows = {key[0]: doc["row"] for key, doc in logged.items() if key[1] == "INSERT"}
    assert rows == {
        1: {"b": "00000000", "vb": "0000", "bl": "00"},
        2: {"b": "01000000", "vb": "0100", "bl": "0100"},
        3: {"b": "ff00ff00", "vb": "ff", "bl": "ff00"},
        4: {"b": None, "vb": None, "bl": None},
        5: {"b": "00000001", "vb": "", "bl": ""},
    }
    update = logged[(1, "UPDATE")]
    assert (update["row"]["b"], update["old"]) == ("ab000000", {"b": "00000000"})


@pytest.mark.parametrize("topic", [CANAL_TOPIC, CANAL_PB_TOPIC], ids=["flat", "protobuf"])
async def test_composite_keys_holding_the_separator_stay_two_documents(
    topic: str, new_service: ServiceFactory, es: AsyncElasticsearch,
    mariadb: pymysql.connections.Connection, new_table: TableFactory,
) -> None:
    table = new_table("a VARCHAR(8), b VARCHAR(8), v INT, PRIMARY KEY (a, b)")
    service = await following(new_service, "canal_rows", table, topic)
    execute(mariadb, f"INSERT INTO {table} VALUES ('1:2', '3', 1), ('1', '2:3', 2), ('7', '3', 3)")

    await wait_changes(es, service, 3)
    found = await es.search(index=service.index, size=10, query={"match_all": {}})
    assert {hit["_id"]: hit["_source"]["v"] for hit in found["hits"]["hits"]} == {
        "1\\:2:3": 1, "1:2\\:3": 2, "7:3": 3,
    }


#: The record that once stopped the service for good, at every restart: a number in a composite
#: key's column of `data`, and `old` changing the key's other column.
FATAL_ONCE = orjson.dumps({
    "data": [{"id": 1, "name": "x"}], "database": "shop", "table": "users", "type": "UPDATE",
    "isDdl": False, "pkNames": ["id", "name"], "old": [{"name": "y"}], "es": 1709296245000,
    "mysqlType": {"id": "int(11)", "name": "varchar(32)"},
})


async def test_a_record_with_a_number_in_a_composite_key_is_set_aside_and_the_stream_goes_on(
    new_service: ServiceFactory, canal: CanalProducer, es: AsyncElasticsearch
) -> None:
    service = await new_service("users_plain", settings={"dead_letter": {"on_failure": "skip"}})
    await canal.rows(service.topic, "users", "INSERT", [row(1)], partition=0)
    bad = (await canal.send_and_wait(service.topic, FATAL_ONCE, partition=0)).offset
    await canal.rows(service.topic, "users", "INSERT", [row(2)], partition=0)
    await canal.flush()

    await service.started()
    await wait_count(es, service.index, 2, service=service)

    async def counted() -> bool:
        stats = service.stats()
        return bool(stats and stats.get("decode_errors") == 1 and stats.get("rows_done") == 2)

    await eventually(counted, timeout=20, what="decode_errors == 1", service=service)
    assert not service.exited
    assert f"{service.topic}/0@{bad}" in service.log_since_start()
    assert "column 'id': value must be a string or null" in service.log_since_start()
