"""The seam between a message format and the rest: a Decoder turns one Kafka record into
row Changes, and `[source] format` names which one.

The consume loop, redrive and the test harness hold a Decoder and know nothing of the format;
anything the format cannot read is a DecodeError (esupdater.errors), set aside whole.

To add a format: write a class with `decode(value, position) -> list[Change]` that raises a
DecodeError subclass for bad input (see esupdater.canal.CanalDecoder), type its rows with
esupdater.mysql_types when they come from MySQL, add its name to `SourceSettings.format`
(esupdater.settings) and a factory to FORMATS below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from esupdater.change import Change, Position
from esupdater.errors import DecodeError

if TYPE_CHECKING:
    from esupdater.settings import SourceSettings

__all__ = ["FORMATS", "DecodeError", "Decoder", "make_decoder"]


@runtime_checkable
class Decoder(Protocol):
    """One message format's reader: Kafka record bytes to the Changes they carry."""

    def decode(self, value: bytes | None, position: Position) -> list[Change]:
        """The record's Changes in order ([] for a record without rows: a transaction
        marker, a heartbeat); raises DecodeError naming `position` for anything else.

        `value` is None for a tombstone. Called once per record on the hot path.
        """
        ...


def _canal(source: SourceSettings) -> Decoder:
    from esupdater.canal import CanalDecoder

    return CanalDecoder(tinyint1_as_bool=source.tinyint1_as_bool)


#: `source.format` value -> the factory of its Decoder (imported on use: one format's
#: dependencies load only when it is chosen).
FORMATS: dict[str, Callable[[SourceSettings], Decoder]] = {
    "canal": _canal,
}


def make_decoder(source: SourceSettings) -> Decoder:
    """The Decoder the `[source]` settings name."""
    try:
        factory = FORMATS[source.format]
    except KeyError:  # the settings accept only known formats: FORMATS lacks one of them
        known = ", ".join(sorted(FORMATS))
        message = f"source.format {source.format!r} has no decoder (known: {known})"
        raise ValueError(message) from None
    return factory(source)
