from gateway.models import metadata
from gateway.settings import GatewaySettings
from servicekit.migrations import run_migrations

run_migrations(metadata, GatewaySettings(dev_mode=True).database_url)
