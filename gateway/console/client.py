"""The console's way into the gateway: every page reads and writes through the real ``/api/v1``.

Calls run in-process (httpx over ASGI, no socket) with the staff member's own session cookie and CSRF
token, so the gateway's role table, CSRF check, rate limit and audit log apply to the console exactly
as they apply to any other client.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import Request

from gateway.auth import CSRF_HEADER, SESSION_COOKIE, Authenticator, Principal

INTERNAL_BASE = "http://gateway.console"


@dataclass
class Answer:
    """One answer of the API: the status, the JSON body (or ``None``) and the problem's detail."""

    status: int
    body: Any
    headers: httpx.Headers

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def problem(self) -> str:
        if isinstance(self.body, dict):
            detail = self.body.get("detail") or self.body.get("title")
            errors = self.body.get("errors")
            if isinstance(detail, str) and isinstance(errors, list) and errors:
                # Say which field is wrong, not only that something is.
                first = errors[0]
                if isinstance(first, dict):
                    where = ".".join(str(p) for p in first.get("loc", [])[1:]) or first.get("field", "")
                    return f"{detail} {where}: {first.get('msg', '')}".strip()
            if isinstance(detail, str):
                return detail
            if isinstance(detail, list):  # FastAPI validation errors
                return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        return f"The gateway answered {self.status}."


class Gateway:
    """The API as one signed-in staff member (or as nobody, for the sign-in itself)."""

    def __init__(self, request: Request, *, token: str | None = None, csrf: str | None = None) -> None:
        self.app = request.app
        self.token = token
        self.csrf = csrf
        self.request_id = request.headers.get("x-request-id")
        # The API sees the browser's address, not the in-process transport's (the sign-in limit is per address).
        self.client = (request.client.host, request.client.port) if request.client else ("unknown", 0)

    def _headers(self, unsafe: bool, extra: dict[str, str] | None) -> dict[str, str]:
        headers: dict[str, str] = dict(extra or {})
        if self.token:
            headers["Cookie"] = f"{SESSION_COOKIE}={self.token}"
        if unsafe and self.csrf:
            headers[CSRF_HEADER] = self.csrf
        if self.request_id:
            headers["X-Request-ID"] = self.request_id
        return headers

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[Answer, httpx.Response]:
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        transport = httpx.ASGITransport(app=self.app, client=self.client)
        async with httpx.AsyncClient(transport=transport, base_url=INTERNAL_BASE, timeout=30) as client:
            response = await client.request(
                method, "/api/v1" + path, params=clean, json=json, headers=self._headers(method != "GET", headers)
            )
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        return Answer(response.status_code, body, response.headers), response

    async def get(self, path: str, **params: Any) -> Answer:
        return (await self.call("GET", path, params=params))[0]

    async def post(self, path: str, json: Any = None, headers: dict[str, str] | None = None, **params: Any) -> Answer:
        return (await self.call("POST", path, params=params, json=json, headers=headers))[0]

    async def send(self, method: str, path: str, json: Any = None) -> Answer:
        return (await self.call(method, path, json=json))[0]

    async def get_many(self, paths: list[str]) -> list[Answer]:
        return list(await asyncio.gather(*(self.get(p) for p in paths)))


async def signed_in(request: Request) -> tuple[Principal, str] | None:
    """The staff member behind the session cookie (and the cookie's token), or ``None``."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    authenticator: Authenticator = request.app.state.authenticator
    principal = await authenticator.from_session(token)
    if principal is None:
        return None
    return principal, token
