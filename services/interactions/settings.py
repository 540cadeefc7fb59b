from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class InteractionsSettings(ServiceSettings):
    """Interactions service settings; every field is read from ``INTERACTIONS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="INTERACTIONS_", extra="ignore")

    database_url: str = Field("sqlite+aiosqlite:///./var/interactions.db", description="Database URL")
    port: int = Field(8002, description="HTTP port")
    # A batch of 1000 touchpoints with bodies needs more than the 1 MiB other services accept.
    max_body_bytes: int = Field(16_777_216, description="Largest accepted request body in bytes (413 above)")
    contacts_url: str = Field("http://127.0.0.1:8001", description="Base URL of the contacts service")
    # Long enough that a contacts service merely slowed by a saturated machine answers (2 s was the p99 of a whole
    # write in the closed-loop load run, and its timeouts were that run's only errors), and below the gateway's
    # upstream timeout (5 s), so a contacts service that is really down gives its own 503 with Retry-After first.
    contacts_timeout_s: float = Field(4.0, description="Timeout of one call to the contacts service, seconds")
    contacts_concurrency: int = Field(32, description="Calls to the contacts service in flight at most")
    contact_cache_size: int = Field(
        200_000, description="Live contact ids remembered in memory (dropped on merge and erase events)"
    )
    retry_after_s: int = Field(5, description="Retry-After of the 503 answered while contacts is unreachable")
    idempotency_ttl_s: int = Field(86_400, description="How long an Idempotency-Key and its response are kept")
    idempotency_in_flight_s: int = Field(
        60, description="A request holding its Idempotency-Key longer than this is taken as abandoned"
    )
    ingest_batch: int = Field(500, description="NATS ingest messages fetched and stored per transaction")
    ingest_retry_max_s: float = Field(
        15.0, description="Longest redelivery delay of an ingest message that failed for a passing cause"
    )
    # Identities are kept hashed with this key (services/interactions/identities.py): the table alone holds no
    # personal data. Every replica needs the same key; a new key only makes the copy learn the identities again.
    identity_key: SecretStr = Field(
        SecretStr("touchpoint-development-identity-key"),
        description="Key of the HMAC that hashes the identities of the local identity directory (never logged)",
    )
