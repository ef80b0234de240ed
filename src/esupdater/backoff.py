"""Capped exponential backoff with jitter, shared by every retry loop."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import TypeVar


@dataclass(frozen=True, slots=True)
class Backoff:
    """`delay(n)` for the n-th retry (0-based): initial * 2**n, capped, with full jitter
    on the upper half so that many retrying tasks do not hit a recovering server at once."""

    initial: float = 0.2
    maximum: float = 30.0

    @classmethod
    def from_ms(cls, initial_ms: int, maximum_ms: int) -> Backoff:
        """From the `[bulk] initial_backoff_ms / max_backoff_ms` settings."""
        return cls(initial_ms / 1000, maximum_ms / 1000)

    def delay(self, attempt: int) -> float:
        ceiling = min(self.maximum, self.initial * 2.0 ** min(attempt, 32))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


T = TypeVar("T")

#: What a retry loop is told before each wait: the error, the attempt that failed (1-based)
#: and the seconds it will wait. It logs and counts; the loop does the waiting.
RetryReport = Callable[[BaseException, int, float], None]


async def retry(
    attempt: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    retry_on: Callable[[BaseException], bool],
    report: RetryReport,
    stop: asyncio.Event | None = None,
) -> T | None:
    """Run `attempt` until it succeeds, waiting `backoff` between failures `retry_on` accepts.

    The one retry loop of the code base; what differs between its users (which errors are
    worth retrying, what is logged and counted) is passed in. Any other error propagates.
    With `stop`, the wait ends early when it is set and None is returned instead of retrying.
    """
    failures = 0
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not retry_on(exc):
                raise
            error: BaseException = exc
        delay = backoff.delay(failures)
        failures += 1
        report(error, failures, delay)
        if stop is None:
            await asyncio.sleep(delay)
        elif await _stopped_within(stop, delay):
            return None


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    with suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()
