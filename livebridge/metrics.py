"""Prometheus metrics, one registry per daemon (so tests can run several side by side)."""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_M = TypeVar("_M", Counter, Histogram)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


class Metrics:
    """Every metric the daemon exports at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ("source",)) -> Counter:
            return Counter(f"livebridge_{name}", doc, labels, registry=r)

        self.received = counter("messages_received_total", "Messages offered by sources.")
        self.accepted = counter("messages_accepted_total", "Messages durably stored.")
        self.deduplicated = counter(
            "messages_deduplicated_total", "Messages already seen (answered 2xx, not stored)."
        )
        self.dropped = counter(
            "messages_dropped_total", "Messages dropped on purpose (honeypot, bots, hooks).",
            ("source", "reason"),
        )
        self.rejected = counter(
            "requests_rejected_total", "Requests refused with a 4xx/5xx (bad input, overload).",
            ("source", "reason"),
        )
        self.delivered = counter("messages_delivered_total", "Items delivered.", ("source", "kind"))
        self.retried = counter("messages_retried_total", "Delivery attempts that will be retried.",
                               ("source", "kind"))
        self.dead_lettered = counter(
            "messages_dead_lettered_total", "Items moved to the dead letters.", ("source", "kind")
        )
        self.outbox_depth = Gauge("livebridge_outbox_depth", "Items waiting in the outbox.",
                                  registry=r)
        self.outbox_oldest_age = Gauge(
            "livebridge_outbox_oldest_age_seconds", "Age of the oldest item in the outbox.",
            registry=r,
        )
        self.in_flight = Gauge("livebridge_outbox_in_flight", "Threads being delivered now.",
                               registry=r)
        self.dead_letters = Gauge("livebridge_dead_letters", "Items in the dead letters.",
                                  registry=r)
        self.latency = Histogram(
            "livebridge_delivery_latency_seconds", "From accept to delivered.", ("source",),
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.throttles = counter(
            "route_throttles_total", "Throttles (429) that paused a route and lowered its rate.",
            ("route",),
        )
        self.route_state = Gauge(
            "livebridge_route_breaker_state", "A route's breaker: 0 closed, 1 half-open, 2 open.",
            ("route",), registry=r,
        )
        self.route_rate = Gauge(
            "livebridge_route_rate", "A route's current send rate limit (calls/s; +Inf: none).",
            ("route",), registry=r,
        )
        self.route_paused = Gauge(
            "livebridge_route_paused_seconds", "How long a route still waits (throttle, breaker).",
            ("route",), registry=r,
        )
        self.livedesk_calls = counter(
            "livedesk_calls_total", "Calls to the Livedesk API.", ("endpoint", "status")
        )
        self.livedesk_seconds = Histogram(
            "livebridge_livedesk_call_seconds", "Livedesk API call duration.", ("endpoint",),
            registry=r,
        )

    def labels(self, metric: _M, *values: str) -> _M:
        """``metric.labels(*values)``, looked up once: on the hot paths, prometheus-client's
        ``labels()`` (a lock and a tuple per call) costs several times the ``inc()``."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child
