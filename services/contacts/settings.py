from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class ContactsSettings(ServiceSettings):
    """Contacts service settings; every field is read from ``CONTACTS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CONTACTS_", extra="ignore")

    database_url: str = Field("sqlite+aiosqlite:///./var/contacts.db", description="Database URL")
    port: int = Field(8001, description="HTTP port")
    default_region: str = Field(
        "US", description="Region assumed for phone numbers without +country code, stored or searched"
    )
    search_similarity: float = Field(
        0.3, ge=0.1, le=1.0, description="Trigram similarity a name or company word needs to match a search with a typo"
    )
    import_max_bytes: int = Field(
        67_108_864, description="Largest CSV body of POST /v1/contacts/import in bytes (413 above; read as a stream)"
    )
    import_max_rows: int = Field(100_000, description="Most data rows one CSV import reads (the rest are refused)")
    import_max_errors: int = Field(1_000, description="Most row errors a CSV import lists (all are counted)")
    import_chunk_rows: int = Field(500, description="CSV import rows written per transaction")
