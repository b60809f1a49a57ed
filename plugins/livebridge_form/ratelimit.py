"""A per-client sliding-window rate limiter, in memory.

The counts live in this process only: several daemons behind a load balancer each allow
``limit`` posts per window, and a restart forgets them. Memory is bounded: at most
``max_clients`` clients are tracked (the least recently seen are forgotten first), each with
at most ``limit`` timestamps.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["SlidingWindowLimiter", "client_key"]


@functools.lru_cache(maxsize=4096)
def client_key(address: str) -> str:
    """The rate-limit key of an address: the IPv4 address, or the IPv6 /64 network (one
    household or host usually holds a whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class SlidingWindowLimiter:
    """At most ``limit`` hits per ``window`` seconds per key; ``limit`` 0 allows everything."""

    def __init__(self, limit: int, window: float, *, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def hit(self, key: str) -> float | None:
        """Count one hit for ``key``; return ``None`` if allowed, else the seconds to wait."""
        if self.limit <= 0:
            return None
        now = self._clock()
        self._forget_idle(now)
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque(maxlen=self.limit)
        self._hits.move_to_end(key)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(1.0, math.ceil(hits[0] + self.window - now))
        hits.append(now)
        while len(self._hits) > self.max_clients:
            self._hits.popitem(last=False)
        return None

    def _forget_idle(self, now: float) -> None:
        # Keys are in least-recently-hit order: drop those whose last hit left the window.
        while self._hits:
            key, hits = next(iter(self._hits.items()))
            if hits and hits[-1] > now - self.window:
                break
            del self._hits[key]

    def __len__(self) -> int:
        return len(self._hits)
