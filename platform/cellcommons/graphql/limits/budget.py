"""Each principal's cost points over a rolling window, kept in this process's memory.

Several API replicas each keep their own ledger, so a client spread over N replicas gets up to N budgets. A
multi-replica deployment shares one ledger by implementing `try_spend` / `balance` over Redis (a sorted set
per key: ZADD the spend, ZREMRANGEBYSCORE the expired, sum in one Lua script so check-and-spend stays atomic)
or over a PostgreSQL table; the rest of this package only calls those two methods.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Balance:
    remaining: int
    reset_at: float  # epoch seconds when every point spent so far in the window is back

    def as_dict(self, requested: int) -> dict[str, object]:
        reset = datetime.fromtimestamp(self.reset_at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return {"requested": requested, "remaining": self.remaining, "resetAt": reset}


@dataclass
class _Ledger:
    spends: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def idle_since(self, moment: float) -> bool:
        return not self.spends or self.spends[-1][0] <= moment

    def expire(self, before: float) -> None:
        while self.spends and self.spends[0][0] <= before:
            self.total -= self.spends.popleft()[1]


class Budget:
    def __init__(self, points: int, window: timedelta, clock: Callable[[], float] = time.time):
        self.points = points
        self.window = window.total_seconds()
        self._clock = clock
        self._ledgers: dict[str, _Ledger] = {}
        self._lock = threading.Lock()  # sync execution may run requests on several threads
        self._next_sweep = 0.0

    def try_spend(self, key: str, cost: int) -> tuple[bool, Balance]:
        """Spends `cost` if it fits in what is left; either way returns the balance afterwards."""
        with self._lock:
            now = self._clock()
            self._sweep(now)
            ledger = self._current(key, now)
            admitted = ledger.total + cost <= self.points
            if admitted and cost > 0:
                ledger.spends.append((now, cost))
                ledger.total += cost
            return admitted, self._balance(ledger, now)

    def balance(self, key: str) -> Balance:
        with self._lock:
            now = self._clock()
            return self._balance(self._ledgers.get(key) or _Ledger(), now)

    def _current(self, key: str, now: float) -> _Ledger:
        ledger = self._ledgers.setdefault(key, _Ledger())
        ledger.expire(now - self.window)
        return ledger

    def _balance(self, ledger: _Ledger, now: float) -> Balance:
        ledger.expire(now - self.window)
        reset_at = ledger.spends[-1][0] + self.window if ledger.spends else now
        return Balance(self.points - ledger.total, reset_at)

    def _sweep(self, now: float) -> None:
        # Forget idle principals once per window, so anonymous client addresses do not pile up.
        if now < self._next_sweep:
            return
        for key in [k for k, ledger in self._ledgers.items() if ledger.idle_since(now - self.window)]:
            del self._ledgers[key]
        self._next_sweep = now + self.window


def principal_key(context: Any) -> str:
    """Who is charged: issuer + subject of the principal, else the client's address."""
    principal = getattr(context, "principal", None)
    if principal is not None:
        # Machine clients registered without an issuer are scoped by their institution.
        return f"principal:{principal.issuer or principal.institution_slug} {principal.subject}"
    return f"anonymous:{getattr(context, 'client_host', None) or 'unknown'}"
