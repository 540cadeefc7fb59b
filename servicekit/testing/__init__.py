"""Real components for tests: a nats-server, a throwaway PostgreSQL cluster, service processes."""

import os


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
