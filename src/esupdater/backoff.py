"""Capped exponential backoff with jitter, shared by every retry loop."""

from __future__ import annotations

import random
from dataclasses import dataclass


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
