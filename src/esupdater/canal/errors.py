"""The one error the Canal decoder raises for bad input, so callers can dead-letter it."""

from __future__ import annotations

from esupdater.change import Position
from esupdater.errors import EsupdaterError


class CanalDecodeError(EsupdaterError, ValueError):
    """A Kafka record that is not a Canal message we can decode.

    The message names the record (`topic/partition@offset`) and what was wrong, so the
    dead-letter entry alone tells an operator where to look.
    """

    def __init__(self, position: Position, reason: str) -> None:
        super().__init__(f"{position}: {reason}")
        self.position = position
        self.reason = reason
