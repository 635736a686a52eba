"""Prometheus metrics of the whole process (prometheus-client), served at ``GET /metrics``.

One registry for the process, not the library's global one, so that nothing else that
happens to be imported adds series. Labels never carry an address, a folder name or
anything else a user chose: only ports, protocols, outcomes and route templates.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "DELIVERIES",
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "IMAP_CONNECTIONS",
    "IMAP_CONNECTIONS_TOTAL",
    "LOGIN_FAILURES",
    "QUEUE_SIZE",
    "REGISTRY",
    "RELAY_ATTEMPTS",
    "SMTP_MESSAGES",
    "SMTP_SESSIONS",
    "set_queue_size_source",
]

REGISTRY = CollectorRegistry(auto_describe=True)

SMTP_SESSIONS = Counter(
    "rmail_smtp_sessions", "SMTP connections accepted, by port", ["port"], registry=REGISTRY
)
SMTP_MESSAGES = Counter(
    "rmail_smtp_messages",
    "Messages at the end of DATA, by port and outcome (accepted, refused)",
    ["port", "result"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "rmail_deliveries",
    "Local deliveries per recipient, by outcome (delivered, failed)",
    ["result"],
    registry=REGISTRY,
)
IMAP_CONNECTIONS = Gauge("rmail_imap_connections", "IMAP connections open now", registry=REGISTRY)
IMAP_CONNECTIONS_TOTAL = Counter(
    "rmail_imap_connections_opened", "IMAP connections accepted", ["port"], registry=REGISTRY
)
LOGIN_FAILURES = Counter(
    "rmail_login_failures",
    "Failed or rate-limited logins, by protocol and reason (password, locked)",
    ["protocol", "reason"],
    registry=REGISTRY,
)
RELAY_ATTEMPTS = Counter(
    "rmail_relay_recipients",
    "Outbound recipients after an attempt, by outcome (sent, deferred, failed)",
    ["result"],
    registry=REGISTRY,
)
QUEUE_SIZE = Gauge(
    "rmail_queue_messages", "Messages waiting in the outbound queue", registry=REGISTRY
)
HTTP_REQUESTS = Counter(
    "rmail_http_requests",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "rmail_http_request_duration_seconds",
    "HTTP request time by route template",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    registry=REGISTRY,
)


def set_queue_size_source(source: Callable[[], float]) -> None:
    """Where the queue gauge reads its value at scrape time (the relay sets it)."""
    QUEUE_SIZE.set_function(source)
