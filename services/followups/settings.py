from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class FollowupsSettings(ServiceSettings):
    """Follow-ups service settings; every field is read from ``FOLLOWUPS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="FOLLOWUPS_", extra="ignore")

    database_url: str = Field("sqlite+aiosqlite:///./var/followups.db", description="Database URL")
    port: int = Field(8003, description="HTTP port")
    contacts_url: str = Field("http://127.0.0.1:8001", description="Base URL of the contacts service")
    contacts_timeout_s: float = Field(2.0, description="Timeout of one call to the contacts service, seconds")
    contacts_concurrency: int = Field(16, description="Calls to the contacts service in flight at most")
    replica: str = Field("", description="Name of this replica in leases and fired_by (default: host:pid)")
    scheduler_enabled: bool = Field(True, description="Run the scheduler (due, overdue, escalation) in this process")
    overdue_teams_max: int = Field(
        20, ge=0, description="Teams with a followups_overdue series of their own; the rest are summed as 'other'"
    )
    scheduler_interval_s: float = Field(0.25, description="Pause between scheduler rounds when nothing is due")
    scheduler_batch: int = Field(500, description="Follow-ups claimed per scheduler transaction")
    quiet_sweep_interval_s: float = Field(300.0, description="Pause between premium-quiet sweeps, seconds")
    quiet_sweep_lease_s: int = Field(600, description="How long one replica holds the premium-quiet sweep lease")
    default_timezone: str = Field("UTC", description="Time zone of contacts without one")
    consumer_wait_s: float = Field(
        0.05, description="Longest a consumer waits to fill a batch once events arrive (their latency floor)"
    )
    consumer_batch: int = Field(
        500, description="Events fetched and applied in one transaction at most (a backlog drains in big batches)"
    )
    touch_retention_days: int = Field(400, description="Days of touchpoints kept for policy previews")
    policy_cache_s: float = Field(2.0, description="How long a replica uses its copy of the enabled policies")
