"""What every service-to-service httpx client shares."""

from __future__ import annotations

import httpx

# An idle pooled connection is closed on our side before the server behind it closes it for idleness (uvicorn
# keeps an idle connection 5 s): a request sent on a connection the server is closing at that instant fails
# with nothing received, and a write cannot be retried safely. The 10-minute load run saw exactly that, first
# from the gateway to the services, then from interactions to contacts.
KEEPALIVE_S = 2.0


def pooled_limits(connections: int, *, keepalive_s: float = KEEPALIVE_S) -> httpx.Limits:
    """Pool limits for a client of another Touchpoint service: ``connections`` kept, idle ones dropped early."""
    return httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=keepalive_s
    )
