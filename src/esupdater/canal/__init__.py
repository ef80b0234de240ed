"""Canal's two Kafka forms (flat JSON and protobuf) decoded into typed row Changes.

`decode_record` is all the consumer needs; the builders make realistic Canal bytes for
tests, the demo and the benchmark.
"""

from __future__ import annotations

from esupdater.canal.build import (
    flat_message,
    protobuf_heartbeat_entry,
    protobuf_message,
    protobuf_packet,
    protobuf_row_entry,
    protobuf_transaction_entry,
)
from esupdater.canal.columns import sql_type_for
from esupdater.canal.decode import decode_record
from esupdater.canal.errors import CanalDecodeError

__all__ = [
    "CanalDecodeError",
    "decode_record",
    "flat_message",
    "protobuf_heartbeat_entry",
    "protobuf_message",
    "protobuf_packet",
    "protobuf_row_entry",
    "protobuf_transaction_entry",
    "sql_type_for",
]
