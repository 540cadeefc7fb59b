"""The gateway's HTTP API under ``/api/v1``: one router per resource."""

from fastapi import APIRouter

from gateway.api import (
    admin,
    catalogue,
    contacts,
    followups,
    interactions,
    metrics,
    policies,
    session,
    spreadsheets,
    timeline,
    webhooks,
)

# spreadsheets before contacts: /contacts/export.csv is not a contact id.
MODULES = (
    spreadsheets,
    contacts,
    timeline,
    interactions,
    followups,
    policies,
    metrics,
    admin,
    webhooks,
    session,
    catalogue,
)
router = APIRouter(prefix="/api/v1")
PASSED_ON_BODIES = interactions.PASSED_ON_BODIES
for module in MODULES:
    router.include_router(module.router)


def endpoint_actions() -> list[tuple[str, str, str | None]]:
    """(method, path, action) of every API route: the role matrix per endpoint (docs and tests)."""
    from fastapi.routing import APIRoute

    found: list[tuple[str, str, str | None]] = []
    for module in MODULES:
        for route in module.router.routes:
            if not isinstance(route, APIRoute):
                continue
            action = None
            stack = list(route.dependant.dependencies)
            while stack and action is None:
                dependency = stack.pop()
                action = getattr(dependency.call, "action", None)
                stack.extend(dependency.dependencies)
            for method in sorted(route.methods or ()):
                found.append((method, "/api/v1" + route.path.replace(":path", ""), action))
    return found


# Routes that need no credential: the sign-in, and setting a password with a one-time link (the token is one).
PUBLIC_PATHS = ("/auth/login", "/auth/password", "/auth/password-link")


def render_endpoints_markdown() -> str:
    lines = ["| method | path | action |", "|---|---|---|"]
    for method, path, action in endpoint_actions():
        who = f"`{action}`" if action else "public" if path.endswith(PUBLIC_PATHS) else "any caller"
        lines.append(f"| {method} | `{path}` | {who} |")
    return "\n".join(lines) + "\n"
