"""The decoder's entry point: which Canal form a Kafka record is in, decided per record."""

from __future__ import annotations

from esupdater.canal.errors import CanalDecodeError
from esupdater.canal.flat import decode_flat
from esupdater.canal.proto import decode_protobuf
from esupdater.change import Change, Position

#: First bytes of a JSON document after optional whitespace. A Canal Packet starts with a
#: varint field tag (0x08..0x2a), so `{` (0x7b) and `[` (0x5b) cannot begin one.
_JSON_STARTS = frozenset(b"{[")
_JSON_WHITESPACE = b" \t\r\n"


def decode_record(
    value: bytes | None, position: Position, *, tinyint1_as_bool: bool = False
) -> list[Change]:
    """Split one Kafka record from Canal into typed row Changes.

    Flat JSON (flatMessage=true) and protobuf (flatMessage=false) are both accepted, so a
    topic can be switched between them. Returns [] for records with no rows (transaction
    begin/end, heartbeats); raises CanalDecodeError for anything that is not Canal.

    Any other exception is a decoder bug that this record triggers: it too becomes a
    CanalDecodeError, so the record is set aside and the other records go on.
    """
    try:
        return _decode(value, position, tinyint1_as_bool)
    except CanalDecodeError:
        raise
    except Exception as exc:  # the last line: one record is set aside, not the service
        raise CanalDecodeError(
            position,
            f"the decoder failed on this record ({type(exc).__name__}: {exc}); the record is "
            "set aside: please report it with the record's bytes",
        ) from exc


def _decode(value: bytes | None, position: Position, tinyint1_as_bool: bool) -> list[Change]:
    if value is None:
        raise CanalDecodeError(position, "record has no value (a tombstone), not a Canal message")
    if not value:
        raise CanalDecodeError(position, "record value is empty, not a Canal message")
    first = value[0]
    if first in _JSON_WHITESPACE:
        stripped = value.lstrip(_JSON_WHITESPACE)
        first = stripped[0] if stripped else 0
    if first in _JSON_STARTS:
        return decode_flat(value, position, tinyint1_as_bool)
    return decode_protobuf(value, position, tinyint1_as_bool)
