from servicekit.migrations import run_migrations
from services.followups.models import metadata
from services.followups.settings import FollowupsSettings

run_migrations(metadata, FollowupsSettings().database_url)
