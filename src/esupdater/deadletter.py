"""Setting bad input aside: logged once with its position and reason, and counted."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from esupdater.change import Position
from esupdater.stats import Stats

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a record (or one row of it) could not be applied."""

    position: Position
    reason: str
    error_class: str
    handler: str = ""
    attempts: int = 1


class SetAside:
    """Records permanent failures so that nothing is dropped silently."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    async def put(self, value: bytes | None, failure: Failure) -> None:
        self.stats.dead_lettered += 1
        log.error(
            "set aside %s after %d attempt(s)%s: %s (%s)",
            failure.position, failure.attempts,
            f" in {failure.handler}" if failure.handler else "",
            failure.reason, failure.error_class,
        )
