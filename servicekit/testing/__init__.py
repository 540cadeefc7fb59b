"""Real components for tests: a nats-server, a throwaway PostgreSQL cluster, service processes."""

import os


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_tool(what: str, how: str) -> None:
    """A tool a test needs is not installed: fail under CI=true (never a silent skip there), skip elsewhere."""
    import pytest

    message = f"{what} is not installed ({how})"
    if in_ci():
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)
