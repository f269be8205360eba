"""Retries with capped exponential backoff and full jitter, and the per-source circuit breaker.

Full jitter (a uniform delay between zero and the capped exponential) spreads the retries of many clients
hitting one struggling partner system, instead of having them return in lockstep. A server's Retry-After is
honoured up to the cap. The breaker is kept on the source row, so every scheduler process sees it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries per page, the first included
    base: float = 0.5  # seconds
    cap: float = 30.0  # seconds

    def delay(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """How long to wait before retry number `retry` (0 for the first retry)."""
        jittered = (rng or random).uniform(0, min(self.cap, self.base * 2**retry))
        return max(jittered, min(retry_after or 0.0, self.cap))


@dataclass(frozen=True)
class BreakerPolicy:
    threshold: int = 3  # consecutive failed runs that open the breaker
    cooldown: timedelta = timedelta(minutes=5)  # doubles with each further failure
    max_cooldown: timedelta = timedelta(hours=6)

    def open_until(self, failures: int, now: datetime) -> datetime | None:
        """When a source with `failures` consecutive failed runs may be tried again; None while closed."""
        if failures < self.threshold:
            return None
        return now + min(self.max_cooldown, self.cooldown * 2 ** (failures - self.threshold))
