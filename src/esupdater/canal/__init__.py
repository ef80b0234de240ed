"""Canal's two Kafka forms (flat JSON and protobuf) decoded into typed row Changes.

`CanalDecoder` is the format's Decoder (esupdater.decoding picks it for `source.format =
"canal"`); the builders make realistic Canal bytes for tests, the demo and the benchmark.
The builders and the protobuf classes load on first use, so importing this package (or
decoding flat JSON) does not load protobuf.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from esupdater.canal.decode import CanalDecoder
from esupdater.canal.errors import CanalDecodeError
from esupdater.lazy import lazy_names

if TYPE_CHECKING:
    from esupdater.canal.build import (
        flat_message,
        protobuf_heartbeat_entry,
        protobuf_message,
        protobuf_packet,
        protobuf_row_entry,
        protobuf_transaction_entry,
    )
    from esupdater.canal.columns import sql_type_for

__getattr__ = lazy_names(__name__, {
    **dict.fromkeys(
        (
            "flat_message", "protobuf_heartbeat_entry", "protobuf_message", "protobuf_packet",
            "protobuf_row_entry", "protobuf_transaction_entry",
        ),
        "esupdater.canal.build",
    ),
    "sql_type_for": "esupdater.canal.columns",
})  # fmt: skip

__all__ = [
    "CanalDecodeError",
    "CanalDecoder",
    "flat_message",
    "protobuf_heartbeat_entry",
    "protobuf_message",
    "protobuf_packet",
    "protobuf_row_entry",
    "protobuf_transaction_entry",
    "sql_type_for",
]

