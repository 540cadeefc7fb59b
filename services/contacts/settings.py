from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class ContactsSettings(ServiceSettings):
    """Contacts service settings; every field is read from ``CONTACTS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CONTACTS_", extra="ignore")

    database_url: str = Field("sqlite+aiosqlite:///./var/contacts.db", description="Database URL")
    port: int = Field(8001, description="HTTP port")
    default_region: str = Field("US", description="Region assumed for phone numbers without +country code")
