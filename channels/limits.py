"""Limits at the chat edge: token buckets per key and a count of open connections per client.

Pure bookkeeping, no I/O and no clock of its own: the caller passes the time, so the rules are
tested without waiting. Both live in one gateway process; with several gateways behind a load
balancer each enforces its own share (a client pinned to one gateway meets the configured limit,
one spread over N gateways at most N times it).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One token bucket per key: `burst` tokens at most, refilled at `rate_per_second`.

    A key costs one token per call; a call finding less than one token is refused and told how many
    seconds until one is there. Memory is bounded by `max_keys`: the least recently used bucket is
    forgotten first. A forgotten bucket comes back full, so a client can only gain by it when more
    than `max_keys` other clients were active since its last call.
    """

    def __init__(self, rate_per_second: float, burst: int, max_keys: int = 100_000):
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = rate_per_second
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """0.0 when the call may go ahead (a token is spent); else the seconds to wait for one."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def forget(self, key: str) -> None:
        self._buckets.pop(key, None)

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_header(seconds: float) -> str:
    """HTTP's Retry-After is whole seconds; round up so that a client waiting that long succeeds."""
    return str(max(1, math.ceil(seconds)))


class ConnectionSlots:
    """Open connections, in all and per client address; a connection beyond either limit is refused."""

    def __init__(self, max_total: int, max_per_client: int):
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.total = 0
        self._per_client: dict[str, int] = {}

    def acquire(self, client: str) -> str | None:
        """None when a slot was taken (release it later); else which limit was hit: "total" or "client"."""
        if self.total >= self.max_total:
            return "total"
        held = self._per_client.get(client, 0)
        if held >= self.max_per_client:
            return "client"
        self._per_client[client] = held + 1
        self.total += 1
        return None

    def release(self, client: str) -> None:
        held = self._per_client.get(client, 0)
        if held <= 0:
            return
        if held == 1:
            del self._per_client[client]
        else:
            self._per_client[client] = held - 1
        self.total -= 1

    def held_by(self, client: str) -> int:
        return self._per_client.get(client, 0)
