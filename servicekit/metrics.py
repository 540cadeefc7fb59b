"""Prometheus metrics shared by every service."""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTBOX_PUBLISHED = Counter("outbox_published_total", "Outbox events acknowledged by JetStream", ["relay"])
OUTBOX_PENDING = Gauge("outbox_pending", "Unsent outbox rows seen in the last relay round", ["relay"])
EVENTS_CONSUMED = Counter("events_consumed_total", "Events handled by a consumer", ["consumer", "outcome"])
