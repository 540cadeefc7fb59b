"""Settings every service shares; each service subclasses with its own env prefix."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Base settings. A subclass sets ``env_prefix`` (``CONTACTS_``, ``INTERACTIONS_`` …)."""

    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    database_url: str = Field(description="SQLAlchemy async URL (sqlite+aiosqlite:/// or postgresql+asyncpg://)")
    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma separated (tls:// for TLS)")
    nats_user: str | None = Field(None, description="NATS user (each service has its own: docs/deploy.md)")
    nats_password: SecretStr | None = Field(None, description="NATS password of nats_user (never logged)")
    nats_tls_ca_file: str | None = Field(
        None, description="CA certificate file that signed the NATS server's certificate (set: TLS is required)"
    )
    host: str = Field("127.0.0.1", description="Interface the HTTP server binds")
    port: int = Field(8001, description="HTTP port")
    metrics_host: str = Field("127.0.0.1", description="Interface the Prometheus metrics listener binds")
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port of the Prometheus metrics listener, apart from the API (unset: no listener)",
    )
    metrics_sample_s: float = Field(
        15.0, gt=0, description="Interval of the sampled metrics (consumer lag, outbox age, pool in use), seconds"
    )
    log_level: str = Field("INFO", description="Log level")
    log_json: bool = Field(True, description="Log as JSON lines (false: human-readable console)")
    max_body_bytes: int = Field(1_048_576, description="Largest accepted request body in bytes (413 above)")
    stream_replicas: int = Field(1, description="JetStream replicas for the streams this service creates")
    duplicate_window_s: int = Field(120, description="JetStream duplicate window for Nats-Msg-Id, seconds")
    outbox_batch: int = Field(1000, description="Outbox rows the relay publishes per round")
    outbox_poll_s: float = Field(0.5, description="Relay poll interval when nothing woke it, seconds")
    outbox_retention_s: int = Field(86_400, description="Published outbox rows are deleted after this, seconds")
    db_pool_size: int = Field(10, description="Database connection pool size (PostgreSQL)")
    db_pooler: Literal["none", "transaction"] = Field(
        "none",
        description="What stands before PostgreSQL: none, or transaction (PgBouncer in transaction mode: "
        "no prepared statement cache, unique statement names)",
    )
