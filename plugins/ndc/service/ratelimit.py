"""A token bucket per agency: ``rate`` requests per second on average, ``burst`` at once."""

from __future__ import annotations

import math
import time


class RateLimit:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}  # agency -> (tokens, at)

    def take(self, agency: str, now: float | None = None) -> float:
        """0 when ``agency`` may make a request now (and it is counted), else the seconds until it may."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(agency, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1:
            self._buckets[agency] = (tokens - 1, now)
            return 0.0
        self._buckets[agency] = (tokens, now)
        return (1 - tokens) / self.rate

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
