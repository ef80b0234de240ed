"""Group admin calls that ride out a coordinator being (re)elected, for the demo and tests.

`make up` waits until a group can commit (tools/kafka_ready.py), but a coordinator can still
move (a broker restart in a fault test, the offsets topic's leader changing). Admin calls
about a group then fail for a moment with GroupCoordinatorNotAvailableError and its kin;
`group_call` retries those, and only those, for a bounded time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
)

T = TypeVar("T")

#: The errors a group call meets while a coordinator is being found; all transient.
COORDINATOR_MOVING = (CoordinatorNotAvailableError, CoordinatorLoadInProgressError,
                      NotCoordinatorError)
#: Seconds a group call keeps retrying them.
GROUP_CALL_TIMEOUT = 30.0


async def group_call(call: Callable[[], Awaitable[T]], *,
                     timeout: float = GROUP_CALL_TIMEOUT) -> T:  # noqa: ASYNC109
    """`await call()`, again after a short pause while the group's coordinator is moving;
    the last error after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pause = 0.1
    while True:
        try:
            return await call()
        except COORDINATOR_MOVING:
            if time.monotonic() + pause > deadline:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
