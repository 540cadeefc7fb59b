from servicekit.migrations import run_migrations
from services.interactions.models import metadata
from services.interactions.settings import InteractionsSettings

run_migrations(metadata, InteractionsSettings().database_url)
