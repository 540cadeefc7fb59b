"""Prometheus metrics shared by every service, and the listener that serves them on a port of their own.

The API port never answers ``/metrics``: whoever reaches the API (the public, through the gateway) would read
the routes, their traffic and the consumers' progress. The listener binds ``<PREFIX>_METRICS_HOST`` and
``<PREFIX>_METRICS_PORT``, a port the deployment opens to the monitoring system only.

Several worker processes behind one port (``servicekit.serve``) write their values to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode); their supervisor serves the sum on the
metrics port, so a scrape sees the whole service and not whichever worker the kernel handed the connection to.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTBOX_PUBLISHED = Counter("outbox_published_total", "Outbox events acknowledged by JetStream", ["relay"])
# Across worker processes the largest count a live one saw: the relay holding the turn sees the backlog, the
# others see none.
OUTBOX_PENDING = Gauge(
    "outbox_pending", "Unsent outbox rows seen in the last relay round", ["relay"], multiprocess_mode="livemax"
)
EVENTS_CONSUMED = Counter("events_consumed_total", "Events handled by a consumer", ["consumer", "outcome"])

# Sampled every <PREFIX>_METRICS_SAMPLE_S by servicekit.opsmetrics, never on a scrape (a scrape must not wait on
# JetStream or the database). Labels are names from the code (durables, services), never data. Across worker
# processes: the lag and the outbox age are what every worker sees alike (the largest live one counts); the pool
# is each worker's own (summed).
CONSUMER_PENDING = Gauge(
    "consumer_pending_messages",
    "Messages of the stream not yet delivered to this durable consumer (JetStream num_pending)",
    ["durable"],
    multiprocess_mode="livemax",
)
CONSUMER_ACK_PENDING = Gauge(
    "consumer_ack_pending_messages",
    "Messages delivered to this durable consumer and not yet acknowledged (JetStream num_ack_pending)",
    ["durable"],
    multiprocess_mode="livemax",
)
OUTBOX_OLDEST_AGE = Gauge(
    "outbox_oldest_unsent_age_seconds",
    "Age of the oldest outbox row not yet acknowledged by JetStream (0: none waiting)",
    ["service"],
    multiprocess_mode="livemax",
)
DB_POOL_IN_USE = Gauge(
    "db_pool_connections_in_use",
    "Database connections checked out of the pool",
    ["service"],
    multiprocess_mode="livesum",
)
DB_POOL_LIMIT = Gauge(
    "db_pool_connections_limit",
    "Most database connections the pool hands out (pool size plus overflow)",
    ["service"],
    multiprocess_mode="livesum",
)

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def in_worker_process() -> bool:
    """Whether this process is one of several workers whose supervisor serves their metrics."""
    return bool(os.environ.get(MULTIPROCESS_DIR_ENV))


@dataclass
class MetricsListener:
    """prometheus_client's HTTP server in a thread of this process; every path answers the metrics."""

    server: Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_listener(*, host: str, port: int, registry: CollectorRegistry = REGISTRY) -> MetricsListener:
    """Serve ``registry`` on ``host:port``; a port already taken fails here, at start-up, not at the first scrape."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsListener(server, thread)


def multiprocess_registry() -> CollectorRegistry:
    """A registry summing what every worker wrote to ``PROMETHEUS_MULTIPROC_DIR``."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def forget_worker(pid: int) -> None:
    """A worker ended: its ``live*`` gauges no longer count (its counters do: they are totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
