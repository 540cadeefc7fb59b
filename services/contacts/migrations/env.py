from servicekit.migrations import run_migrations
from services.contacts.models import metadata
from services.contacts.settings import ContactsSettings

run_migrations(metadata, ContactsSettings().database_url)
