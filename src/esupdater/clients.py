"""Kafka and Elasticsearch clients built from settings: one place knows every option."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any, ClassVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context
from elastic_transport import NdjsonSerializer, OrjsonSerializer, SerializationError
from elasticsearch import AsyncElasticsearch

from esupdater.settings import ElasticsearchSettings, KafkaSettings


def _kafka_common(kafka: KafkaSettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None
        )
    return options


def make_consumer(kafka: KafkaSettings, **extra: Any) -> AIOKafkaConsumer:
    """A group consumer with manual commits: offsets move only after acknowledgement."""
    options: dict[str, Any] = {"group_id": kafka.group_id, **extra}
    return AIOKafkaConsumer(
        **_kafka_common(kafka),
        enable_auto_commit=False,
        auto_offset_reset=kafka.auto_offset_reset,
        fetch_max_bytes=kafka.fetch_max_bytes,
        max_partition_fetch_bytes=kafka.max_partition_fetch_bytes,
        max_poll_records=kafka.max_poll_records,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        max_poll_interval_ms=kafka.max_poll_interval_ms,
        # Notice new partitions, and topics created after start, within seconds.
        metadata_max_age_ms=10_000,
        **options,
    )


def make_producer(kafka: KafkaSettings, **extra: Any) -> AIOKafkaProducer:
    """A producer that waits for every replica: dead letters must not be lost."""
    return AIOKafkaProducer(
        **_kafka_common(kafka), acks="all", enable_idempotence=True, **extra
    )


async def topic_partitions(kafka: KafkaSettings, topics: list[str]) -> dict[str, list[int]]:
    """Partitions of each existing topic (a missing topic is left out)."""
    admin = AIOKafkaAdminClient(**_kafka_common(kafka))
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {
        entry["topic"]: sorted(p["partition"] for p in entry["partitions"])
        for entry in described
        if entry["error_code"] == 0
    }


#: Beyond this many digits either side of the point a Decimal keeps its exponent form: MySQL's
#: DECIMAL has at most 65 digits, and `format(d, "f")` of 1E+999999 is a million characters.
_PLAIN_DIGITS = 100


def decimal_json(value: Decimal) -> orjson.Fragment:
    """A Decimal as the exact JSON number it is, never rounded through a float.

    MySQL's text of the value, scale included (`12.50`); Elasticsearch keeps it as sent in
    `_source` and in keyword fields, and parses it for numeric ones. NaN and infinities are
    no JSON number: refused, instead of becoming `null`.
    """
    if not value.is_finite():
        raise SerializationError(
            f"Decimal {str(value)!r} is not a finite number and has no JSON form: send None "
            "or a string instead"
        )
    text = str(value)
    if "E" in text and -_PLAIN_DIGITS <= value.adjusted() <= _PLAIN_DIGITS:
        text = format(value, "f")  # 1.000E-7 -> 0.0000001000, as MySQL writes it
    return orjson.Fragment(text)


class _ExactNumbers:
    """orjson with Decimal written exactly (elastic_transport's default turns it into a float)."""

    def default(self, data: Any) -> Any:
        if isinstance(data, Decimal):
            return decimal_json(data)
        return super().default(data)  # type: ignore[misc]  # dates, UUIDs; else refused

    def json_dumps(self, data: Any) -> bytes:
        try:
            return orjson.dumps(data, default=self.default, option=orjson.OPT_SERIALIZE_NUMPY)
        except orjson.JSONEncodeError as exc:
            if isinstance(exc.__cause__, SerializationError):
                raise exc.__cause__ from None  # keep its reason: the bulk item's error says it
            raise

    def raw_dumps(self) -> Callable[[Any], bytes]:
        """`json_dumps` as one C call (no Python frame per document), for the bulk writer's
        hot path; it raises orjson.JSONEncodeError, whose cause is the SerializationError
        `json_dumps` would raise."""
        return partial(orjson.dumps, default=_decimal_first(self.default),
                       option=orjson.OPT_SERIALIZE_NUMPY)

    def json_loads(self, data: bytes) -> Any:
        return orjson.loads(data)


def _decimal_first(default: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`default` with a Decimal (the type orjson calls back for on the hot path) handled
    first, one call fewer."""

    def exact(data: Any) -> Any:
        if type(data) is Decimal:
            return decimal_json(data)
        return default(data)

    return exact


class ExactJsonSerializer(_ExactNumbers, OrjsonSerializer):
    """The client's JSON serializer: orjson, Decimal as an exact number."""


class ExactNdjsonSerializer(_ExactNumbers, NdjsonSerializer):
    """The same for bodies of `es.bulk(operations=[...])` and other NDJSON requests."""

    mimetype: ClassVar[str] = "application/x-ndjson"


class ExactReadingSerializer(ExactJsonSerializer):
    """Also reads fractions exactly (as Decimal): for comparing with what a table holds
    (`esupdater verify`), where a float would hide a rounded decimal. Slower; not for
    the hot path."""

    def json_loads(self, data: bytes) -> Any:
        return json.loads(data, parse_float=Decimal)


def make_elasticsearch(
    es: ElasticsearchSettings, *, orjson: bool = True, exact_reads: bool = False
) -> AsyncElasticsearch:
    """The shared async client; orjson serialises bulk bodies several times faster.

    `orjson=False` keeps the client's standard-library serializer, for the benchmark's
    comparison only: it sends a Decimal as a float, rounded.
    """
    options: dict[str, Any] = {"request_timeout": es.request_timeout}
    if orjson:
        reading = ExactReadingSerializer() if exact_reads else ExactJsonSerializer()
        options["serializers"] = {
            ExactJsonSerializer.mimetype: reading,
            ExactNdjsonSerializer.mimetype: ExactNdjsonSerializer(),
        }
    if es.username and es.password is not None:
        options["basic_auth"] = (es.username, es.password.get_secret_value())
    if es.api_key is not None:
        options["api_key"] = es.api_key.get_secret_value()
    if es.ca_certs:
        options["ca_certs"] = str(es.ca_certs)
    return AsyncElasticsearch(list(es.hosts), **options)
