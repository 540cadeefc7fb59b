"""Gateway settings: ``GATEWAY_<FIELD>``, plus ``TOUCHPOINT_ADMIN_KEY`` for the first admin key."""

from __future__ import annotations

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from servicekit.clients import KEEPALIVE_S
from servicekit.settings import ServiceSettings

# Known to everyone who reads this file: accepted only in dev mode (`make up` prints it).
DEV_ADMIN_KEY = "tp_dev_admin_key_change_me"
DEV_SECRET_KEY = "tp-dev-secret-change-me"


class GatewaySettings(ServiceSettings):
    """Gateway settings; every field is read from ``GATEWAY_<FIELD>`` except ``admin_key``."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", populate_by_name=True)

    database_url: str = Field("sqlite+aiosqlite:///./var/gateway.db", description="Database URL")
    port: int = Field(8000, description="HTTP port")
    contacts_url: str = Field("http://127.0.0.1:8001", description="Base URL of the contacts service")
    interactions_url: str = Field("http://127.0.0.1:8002", description="Base URL of the interactions service")
    followups_url: str = Field("http://127.0.0.1:8003", description="Base URL of the follow-ups service")
    dev_mode: bool = Field(
        False, description="Development mode: a development admin key and secret when unset; cookies not Secure"
    )
    admin_key: str | None = Field(
        None,
        validation_alias=AliasChoices("TOUCHPOINT_ADMIN_KEY", "admin_key"),
        description="The first admin API key (env TOUCHPOINT_ADMIN_KEY); required outside dev mode",
    )
    secret_key: str | None = Field(
        None, description="Signs timeline cursors and stream ids (HMAC); required outside dev mode", min_length=16
    )
    upstream_timeout_s: float = Field(5.0, description="Timeout of one call to a service (504 above), seconds")
    upstream_connect_timeout_s: float = Field(1.0, description="Connect timeout to a service (503 above), seconds")
    upstream_read_retries: int = Field(2, description="Retries of an idempotent read after a transport failure")
    upstream_pool_size: int = Field(100, description="Connections per service in the pooled client")
    upstream_keepalive_s: float = Field(
        KEEPALIVE_S,
        gt=0,
        description="Idle time after which a pooled connection to a service is closed (below its 5 s)",
    )
    import_max_bytes: int = Field(
        67_108_864, description="Largest CSV body of POST /api/v1/contacts/import in bytes (413 above)"
    )
    csv_timeout_s: float = Field(
        900.0, description="How long a CSV import or export may wait on a service between two reads, seconds"
    )
    rate_limit_per_minute: int = Field(1200, description="Requests per minute per API key or user (429 above)")
    rate_limit_burst: int = Field(200, description="Requests a caller may send at once before the rate applies")
    session_ttl_s: int = Field(12 * 3600, description="Staff session lifetime, seconds")
    sign_in_per_minute_per_address: int = Field(
        20,
        ge=1,
        description="Failed sign-ins per minute from one client address, per process, across emails (429 above; "
        "the per-email lockout applies too)",
    )
    password_hash_concurrency: int = Field(
        1,
        ge=1,
        le=64,
        description="Password hashes (argon2) computed at once per process, off the event loop; more sign-ins wait",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Gateway processes behind the port under `make up` and the benchmarks (servicekit.serve, one SO_REUSEPORT"
            " socket each); compose and Kubernetes run one process per container and scale by replicas"
        ),
    )
    streams_per_caller: int = Field(
        10, ge=1, le=1000, description="Timeline streams one API key or user may hold open at once, per process (429)"
    )
    key_cache_s: float = Field(5.0, description="How long a verified API key is trusted without a database look-up")
    timeline_max_limit: int = Field(100, ge=1, le=199, description="Largest timeline page (the services page at 200)")
    header_cache_s: float = Field(2.0, description="How long a contact's timeline header is reused, seconds")
    timeline_cache_s: float = Field(
        2.0,
        description="How long a timeline page is reused, seconds (0: never); any event about the contact retires it",
    )
    consumer_batch: int = Field(
        500, ge=1, le=1000, description="Events fetched and applied to the projection in one transaction at most"
    )
    consumer_wait_s: float = Field(
        0.05, gt=0, description="Longest a projection consumer waits to fill a batch once events arrive, seconds"
    )

    webhooks_allow_private: bool = Field(
        False,
        description="Let webhooks reach loopback, private and link-local addresses (SSRF guard off; `make up` sets it)",
    )
    webhooks_timeout_s: float = Field(10.0, gt=0, le=60, description="Timeout of one webhook delivery, seconds")
    webhooks_retry_window_s: float = Field(
        24 * 3600, gt=0, description="How long a webhook delivery is retried before it is dead-lettered, seconds"
    )
    webhooks_backoff_s: float = Field(
        5.0, gt=0, description="First retry delay of a webhook delivery; doubles per attempt, with jitter, seconds"
    )
    webhooks_backoff_max_s: float = Field(3600.0, gt=0, description="Longest delay between two webhook attempts")
    webhooks_poll_s: float = Field(1.0, gt=0, description="How often the webhook worker looks for due retries")
    webhooks_concurrency: int = Field(
        10, ge=1, le=100, description="Webhook deliveries claimed and sent at once by one gateway process"
    )

    @model_validator(mode="after")
    def _no_development_secrets_outside_dev(self) -> GatewaySettings:
        if self.dev_mode:
            self.admin_key = self.admin_key or DEV_ADMIN_KEY
            self.secret_key = self.secret_key or DEV_SECRET_KEY
            return self
        if not self.admin_key or self.admin_key == DEV_ADMIN_KEY:
            raise ValueError(
                "TOUCHPOINT_ADMIN_KEY must be set to your own key outside dev mode (GATEWAY_DEV_MODE=false)"
            )
        if len(self.admin_key) < 24:
            raise ValueError("TOUCHPOINT_ADMIN_KEY must be at least 24 characters")
        if not self.secret_key or self.secret_key == DEV_SECRET_KEY:
            raise ValueError("GATEWAY_SECRET_KEY must be set to your own secret outside dev mode")
        return self

    @property
    def cookie_secure(self) -> bool:
        return not self.dev_mode

    @property
    def signing_key(self) -> bytes:
        assert self.secret_key is not None
        return self.secret_key.encode()
