"""The Canal decoder: which of Canal's two forms a Kafka record is in, decided per record."""

from __future__ import annotations

import functools
from collections.abc import Callable

from esupdater.canal.errors import CanalDecodeError
from esupdater.canal.flat import decode_flat
from esupdater.change import Change, Position

#: First bytes of a JSON document after optional whitespace. A Canal Packet starts with a
#: varint field tag (0x08..0x2a), so `{` (0x7b) and `[` (0x5b) cannot begin one.
_JSON_STARTS = frozenset(b"{[")
_JSON_WHITESPACE = b" \t\r\n"


class CanalDecoder:
    """Canal's Kafka records, flat JSON (flatMessage=true) or protobuf (flatMessage=false).

    Both forms are accepted, decided per record, so a topic can be switched between them.
    `tinyint1_as_bool` (setting `source.tinyint1_as_bool`) makes `tinyint(1)` columns bools.
    """

    __slots__ = ("tinyint1_as_bool",)

    def __init__(self, *, tinyint1_as_bool: bool = False) -> None:
        self.tinyint1_as_bool = tinyint1_as_bool
        # The service's decoder loads protobuf now rather than on its first protobuf record;
        # `import esupdater` alone never does.
        _protobuf_decoder()

    def decode(self, value: bytes | None, position: Position) -> list[Change]:
        """Split one Kafka record from Canal into typed row Changes.

        Returns [] for records with no rows (transaction begin/end, heartbeats); raises
        CanalDecodeError (a DecodeError) for anything that is not Canal.

        Any other exception is a decoder bug that this record triggers: it too becomes a
        CanalDecodeError, so the record is set aside and the other records go on.
        """
        try:
            if value and value[0] in _JSON_STARTS:  # the usual record, one call sooner
                return decode_flat(value, position, self.tinyint1_as_bool)
            return _decode(value, position, self.tinyint1_as_bool)
        except CanalDecodeError:
            raise
        except Exception as exc:  # the last line: one record is set aside, not the service
            raise CanalDecodeError(
                position,
                f"the decoder failed on this record ({type(exc).__name__}: {exc}); the record "
                "is set aside: please report it with the record's bytes",
            ) from exc


def decode_protobuf(value: bytes, position: Position, tinyint1_as_bool: bool) -> list[Change]:
    """The protobuf form; protobuf and the generated classes load on the first call."""
    return _protobuf_decoder()(value, position, tinyint1_as_bool)


@functools.cache
def _protobuf_decoder() -> Callable[[bytes, Position, bool], list[Change]]:
    # An import statement per record would cost more than this cached call.
    from esupdater.canal.proto import decode_protobuf as decode

    return decode


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
