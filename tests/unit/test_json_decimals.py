"""DECIMAL columns reach Elasticsearch as the exact JSON number MySQL holds, never via a float."""

from __future__ import annotations

import timeit
import uuid
from datetime import datetime
from decimal import Decimal

import orjson
import pytest
from elastic_transport import SerializationError

from esupdater.backoff import Backoff
from esupdater.bulk import BulkLimits, BulkWriter
from esupdater.clients import make_elasticsearch
from esupdater.errors import BulkItemError
from esupdater.settings import ElasticsearchSettings
from esupdater.testing import MemorySink

BIG = Decimal("123456789012345678.91")


@pytest.fixture(scope="module")
def client_serializers() -> dict[str, object]:
    es = make_elasticsearch(ElasticsearchSettings(hosts=["http://127.0.0.1:9200"]))
    return dict(es.transport.serializers.serializers)


def dumps(serializers: dict[str, object], mimetype: str, data: object) -> bytes:
    serializer = serializers[mimetype]
    return serializer.dumps(data)  # type: ignore[attr-defined,no-any-return]


JSON_TYPES = ["application/json", "application/vnd.elasticsearch+json"]


@pytest.mark.parametrize("mimetype", JSON_TYPES)
@pytest.mark.parametrize(
    ("value", "json"),
    [
        (BIG, b"123456789012345678.91"),
        (Decimal("999999999999.999999"), b"999999999999.999999"),
        (Decimal("12.50"), b"12.50"),  # the column's scale, as MySQL shows it
        (Decimal("-0.00"), b"-0.00"),
        (Decimal("0.0000001000"), b"0.0000001000"),  # not 1.000E-7: the same text as MySQL's
        (Decimal("1E+999999"), b"1E+999999"),  # far past any float, still exact
        (Decimal("-18446744073709551615"), b"-18446744073709551615"),
    ],
)
def test_a_decimal_is_sent_as_the_exact_json_number(
    client_serializers: dict[str, object], mimetype: str, value: Decimal, json: bytes
) -> None:
    assert dumps(client_serializers, mimetype, {"price": value}) == b'{"price":' + json + b"}"


def test_decimals_in_a_direct_bulk_call_are_exact_too(
    client_serializers: dict[str, object],
) -> None:
    body = dumps(client_serializers, "application/x-ndjson", [{"index": {}}, {"price": BIG}])
    assert body == b'{"index":{}}\n{"price":123456789012345678.91}\n'


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-sNaN")])
def test_a_decimal_that_is_no_number_is_refused_instead_of_becoming_null(
    client_serializers: dict[str, object], value: Decimal
) -> None:
    with pytest.raises(SerializationError, match="not a finite number"):
        dumps(client_serializers, "application/json", {"price": value})


def test_other_values_are_serialised_as_before(client_serializers: dict[str, object]) -> None:
    assert dumps(client_serializers, "application/json", {"a": 0.25, "b": [1, "x", None]}) == (
        b'{"a":0.25,"b":[1,"x",null]}'
    )


async def test_the_memory_sink_stores_a_decimal_as_elasticsearch_keeps_it() -> None:
    sink = MemorySink()
    source = {"big": BIG, "price": Decimal("12.50"), "ratio": 0.1, "n": 3}
    await sink.execute({"_op_type": "index", "_index": "i", "_id": "1", "_source": source})

    stored = sink.documents["i"]["1"]

    assert stored["big"] == BIG  # _source holds the exact text; a float would lose digits
    assert stored["price"] == 12.5  # a float holds it exactly: a float, as a JSON reader gives
    assert isinstance(stored["price"], float)
    assert stored["ratio"] == 0.1
    assert isinstance(stored["ratio"], float)
    assert stored["n"] == 3


def test_serialising_a_typical_row_is_measured() -> None:
    """Not a timing assert: prints the cost of one typical row, for the record (-s shows it)."""
    es = make_elasticsearch(ElasticsearchSettings(hosts=["http://127.0.0.1:9200"]))
    serializer = es.transport.serializers.get_serializer("application/json")
    row = {"id": 7, "name": "Ada", "email": "ada@example.com", "city": "Paris",
           "balance": Decimal("12.50"), "created_at": "2026-11-01T10:00:00"}
    seconds = min(timeit.repeat(lambda: serializer.dumps(row), number=2000, repeat=3)) / 2000
    print(f"\none typical row with a DECIMAL: {seconds * 1e6:.2f} µs")
    assert serializer.dumps(row).count(b"12.50") == 1


def test_the_bulk_writer_s_direct_serialiser_writes_what_the_client_s_does() -> None:
    es = make_elasticsearch(ElasticsearchSettings(hosts=["http://127.0.0.1:9200"]))
    serializer = es.transport.serializers.get_serializer("application/json")
    direct = serializer.raw_dumps()
    row = {"d": Decimal("12.50"), "tiny": Decimal("1E-7"), "at": datetime(2026, 1, 2, 3, 4, 5),
           "u": uuid.UUID(int=1), "n": None}
    assert direct(row) == serializer.dumps(row)
    with pytest.raises(orjson.JSONEncodeError) as caught:
        direct({"x": Decimal("NaN")})
    assert isinstance(caught.value.__cause__, SerializationError)
    assert "not a finite number" in str(caught.value.__cause__)


async def test_a_document_the_writer_cannot_serialise_is_refused_with_the_reason() -> None:
    es = make_elasticsearch(ElasticsearchSettings(hosts=["http://127.0.0.1:9200"]))
    writer = BulkWriter(es, BulkLimits(), Backoff(0.001, 0.01))
    await writer.start()
    try:
        with pytest.raises(BulkItemError, match="not a finite number") as caught:
            await writer.execute({"_index": "i", "_id": "1", "_source": {"x": Decimal("NaN")}})
        assert caught.value.status == 400
    finally:
        await writer.close()
        await es.close()
