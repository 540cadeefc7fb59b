from __future__ import annotations

import uvicorn

from servicekit.clients import KEEPALIVE_S


def test_service_clients_drop_idle_connections_before_the_server_behind_them_does() -> None:
    # Every service runs uvicorn with its default keep-alive; the mechanism itself is tested against a real
    # socket server in gateway/tests/test_upstream.py.
    server_keep_alive_s = uvicorn.Config("gateway.app:create_app").timeout_keep_alive
    assert server_keep_alive_s > KEEPALIVE_S
