"""Every role against every endpoint, driven by the permission table in gateway/auth.py."""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi.routing import APIRoute

from gateway.app import create_app
from gateway.auth import PERMISSIONS, Action, Role, allowed, render_matrix_markdown
from gateway.settings import GatewaySettings
from gateway.tests.conftest import make_key
from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app

# The sign-in, and setting a password with a one-time link (the link's token is the credential).
PUBLIC = {("POST", "/api/v1/auth/login"), ("POST", "/api/v1/auth/password-link"), ("POST", "/api/v1/auth/password")}
ANY_CALLER = {("POST", "/api/v1/auth/logout"), ("GET", "/api/v1/auth/me"), ("GET", "/api/v1/asyncapi.json")}


def action_of(route: APIRoute) -> Action | None:
    """The action a route declares through its typed permission dependency."""
    stack = list(route.dependant.dependencies)
    while stack:
        dependency = stack.pop()
        action = getattr(dependency.call, "action", None)
        if action is not None:
            return Action(action)
        stack.extend(dependency.dependencies)
    return None


def api_routes() -> list[tuple[str, str, APIRoute]]:
    from gateway.api import MODULES

    found = []
    for module in MODULES:
        for route in module.router.routes:
            assert isinstance(route, APIRoute)
            for method in sorted(route.methods or ()):
                found.append((method, "/api/v1" + route.path, route))
    openapi = create_app(GatewaySettings(dev_mode=True)).openapi()["paths"]
    documented = {(m.upper(), p) for p, ops in openapi.items() if p.startswith("/api/v1") for m in ops}
    assert documented == {(m, p.replace(":path", "")) for m, p, _ in found}, "the table covers the OpenAPI document"
    return found


def test_every_api_route_declares_an_action_of_the_table() -> None:
    routes = api_routes()
    assert len(routes) >= 35
    for method, path, route in routes:
        if (method, path) in PUBLIC | ANY_CALLER:
            continue
        assert action_of(route) is not None, f"{method} {path} declares no permission"
    declared = {action_of(r) for _, _, r in routes} - {None}
    assert declared == set(Action), "every action of the table is used by a route"


def test_the_table_says_what_the_issue_says() -> None:
    assert PERMISSIONS[Role.admin] == frozenset(Action)
    assert PERMISSIONS[Role.ingest] == {Action.interactions_log, Action.contacts_resolve}
    assert all(a.value.endswith(":read") for a in PERMISSIONS[Role.readonly])
    for denied in (Action.contacts_read, Action.timeline_read, Action.followups_read):
        assert not allowed(Role.ingest, denied)
    for admin_only in (
        Action.api_keys_manage, Action.users_manage, Action.policies_manage, Action.contacts_erase,
        Action.webhooks_manage,
    ):  # fmt: skip
        assert [r for r in Role if allowed(r, admin_only)] == [Role.admin]


def test_the_docs_show_the_table_the_endpoints_and_the_settings() -> None:
    from gateway.docs import DOC, render

    docs = DOC.read_text()
    assert render_matrix_markdown() in docs
    assert render(docs) == docs, "run: python -m gateway.docs"


def _body_for(path: str, method: str) -> Any:
    if method in ("GET", "DELETE"):
        return None
    return {}


async def test_every_role_against_every_endpoint(
    gateway_settings: GatewaySettings, clock: MovableClock, unused_tcp_port: int
) -> None:
    # The services are down (nothing listens): an allowed call gets past the gateway's checks and
    # meets a 503/422/404; a denied one stops at 403 before any service is called.
    down = f"http://127.0.0.1:{unused_tcp_port}"
    settings = gateway_settings.model_copy(
        update={"contacts_url": down, "interactions_url": down, "followups_url": down, "rate_limit_burst": 10_000}
    )
    async with running_app(create_app(settings, clock=clock)) as client:
        keys = {role: await make_key(client, role.value) for role in Role}
        checked = 0
        for method, path, route in api_routes():
            if (method, path) in PUBLIC:
                continue
            url = re.sub(
                r"\{[a-z_]+(:path)?\}", lambda m: "thread-1" if "thread" in m.group(0) else str(uuid.uuid4()), path
            )
            action = action_of(route)
            for role, headers in keys.items():
                response = await client.request(method, url, headers=headers, json=_body_for(path, method))
                if action is None or allowed(role, action):
                    assert response.status_code not in (401, 403), (role, method, path, response.text)
                else:
                    assert response.status_code == 403, (role, method, path, response.status_code, response.text)
                    assert response.json()["action"] == action.value
                checked += 1
            anonymous = await client.request(method, url, json=_body_for(path, method))
            assert anonymous.status_code == 401, (method, path)
        assert checked >= 35 * len(Role)
