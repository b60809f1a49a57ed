"""The in-memory sliding-window limiter."""

from __future__ import annotations

from livebridge_form.ratelimit import SlidingWindowLimiter, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window() -> None:
    clock = Clock()
    limiter = SlidingWindowLimiter(2, 60, clock=clock)
    assert limiter.hit("a") is None
    clock.now += 30
    assert limiter.hit("a") is None
    assert limiter.hit("a") == 30  # the first hit leaves the window in 30 s
    assert limiter.hit("b") is None
    clock.now += 31
    assert limiter.hit("a") is None  # one slot freed
    assert limiter.hit("a") == 29


def test_memory_is_bounded() -> None:
    clock = Clock()
    limiter = SlidingWindowLimiter(1, 60, max_clients=3, clock=clock)
    for i in range(10):
        limiter.hit(f"ip{i}")
    assert len(limiter) == 3
    clock.now += 61
    limiter.hit("new")
    assert len(limiter) == 1  # idle clients are forgotten


def test_zero_means_no_limit() -> None:
    limiter = SlidingWindowLimiter(0, 60)
    assert all(limiter.hit("a") is None for _ in range(100))
    assert len(limiter) == 0


def test_client_keys() -> None:
    assert client_key("203.0.113.9") == "203.0.113.9"
    assert client_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert client_key("2001:db8:1:2:3:4:5:6") == client_key("2001:db8:1:2:ffff::1")
    assert client_key("2001:db8:1:2:3:4:5:6") != client_key("2001:db8:1:3::1")
