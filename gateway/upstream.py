"""Calls from the gateway to the services: one pooled httpx client per service.

Reads (GET) are retried after a transport failure or a 502/503/504; writes are never retried here
(the caller's ``Idempotency-Key`` makes its own retry safe). A service that cannot be reached is a 503
problem naming it, with ``Retry-After``; one that does not answer in time is a 504 problem naming it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import Response

from servicekit.clients import KEEPALIVE_S, service_client
from servicekit.logging import current_request_context, get_logger
from servicekit.problems import PROBLEM_MEDIA_TYPE, ProblemError, ServiceUnavailable

log = get_logger(__name__)

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
# The headers a client acts on; the services spell them as docs/api.md does (httpx matches names case-blind).
_PASSED_HEADERS = ("etag", "retry-after", "idempotency-key", "idempotency-replayed")


def path_segment(value: object) -> str:
    """One value as one path segment of a service's URL: every reserved character percent-encoded, a slash too,
    and a value of only dots spelled ``%2E`` so that neither the client (httpx removes dot-segments) nor the
    service can read it as a step up. ``a/../../metrics`` stays inside the route it was sent to."""
    text = str(value)
    if text.strip(".") == "":
        return "%2E" * len(text)
    return quote(text, safe="")


def upstream_path(template: str, *values: object) -> str:
    """``template``'s ``{}`` filled with ``values``, each encoded as one segment (the only way a route puts a
    caller's value into a service's path)."""
    return template.format(*(path_segment(value) for value in values))


class UnsafeUpstreamPath(RuntimeError):
    """A path with a dot-segment reached ``ServiceClient.request``: a route built it without ``upstream_path``."""


class GatewayTimeout(ProblemError):
    status, slug, title = 504, "gateway-timeout", "A service did not answer in time"


class BadGateway(ProblemError):
    status, slug, title = 502, "bad-gateway", "A service failed"


class ServiceClient:
    """One service behind the gateway (contacts, interactions or followups)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        read_retries: int,
        pool_size: int = 100,
        keepalive_s: float = KEEPALIVE_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.read_retries = read_retries
        self.client = service_client(
            base_url,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s, pool=connect_timeout_s),
            connections=pool_size,
            keepalive_s=keepalive_s,
            transport=transport,
        )

    async def close(self) -> None:
        await self.client.aclose()

    def _headers(self, caller: str | None, extra: dict[str, str] | None) -> dict[str, str]:
        context = current_request_context()
        headers: dict[str, str] = {}
        if context.get("request_id"):
            headers["X-Request-ID"] = str(context["request_id"])
        if context.get("traceparent"):
            headers["traceparent"] = str(context["traceparent"])
            if context.get("tracestate"):
                headers["tracestate"] = str(context["tracestate"])
        if caller:
            headers["X-Touchpoint-Caller"] = caller
        if extra:
            headers.update({k: v for k, v in extra.items() if v is not None})
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        caller: str | None,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one call (a body as ``json``, or as the caller's own bytes in ``content`` with its Content-Type in
        ``headers``); transport failures become 503/504 problems naming this service."""
        if any(segment in (".", "..") for segment in path.split("?", 1)[0].split("/")):
            raise UnsafeUpstreamPath(path)  # a 500: a bug of ours (not the caller's input), never another route
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        attempts = 1 + (self.read_retries if method in _IDEMPOTENT else 0)
        delay = 0.05
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = await self.client.request(
                    method,
                    path,
                    params=clean_params,
                    json=json,
                    content=content,
                    headers=self._headers(caller, headers),
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                if not last:
                    await asyncio.sleep(delay)
                    delay *= 4
                    continue
                log.warning("upstream_unreachable", upstream=self.name, error=repr(exc))
                raise ServiceUnavailable(
                    f"The {self.name} service cannot be reached.", retry_after=5, service=self.name
                ) from None
            except httpx.TimeoutException:
                if not last:
                    continue
                raise GatewayTimeout(f"The {self.name} service did not answer in time.", service=self.name) from None
            except httpx.TransportError as exc:
                if not last:
                    await asyncio.sleep(delay)
                    delay *= 4
                    continue
                log.warning("upstream_failed", upstream=self.name, error=repr(exc))
                raise ServiceUnavailable(
                    f"The {self.name} service dropped the connection.", retry_after=5, service=self.name
                ) from None
            if response.status_code in (502, 503, 504) and not last:
                await asyncio.sleep(delay)
                delay *= 4
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def json(self, method: str, path: str, *, caller: str | None, **kwargs: Any) -> Any:
        """Call and return the JSON body of a 2xx answer; any other answer is raised as a problem."""
        response = await self.request(method, path, caller=caller, **kwargs)
        if response.status_code >= 300:
            raise UpstreamAnswer(response, service=self.name)
        return response.json()


class UpstreamAnswer(Exception):
    """A service's non-2xx answer, passed on to our caller as it is (problem+json, with its headers)."""

    def __init__(self, response: httpx.Response, *, service: str) -> None:
        super().__init__(f"{service} answered {response.status_code}")
        self.response = response
        self.service = service


def _public_instance(content: bytes) -> bytes:
    """A problem's ``instance`` names the service's path (``/v1/...``); the caller asked for ``/api/v1/...``."""
    if b'"instance"' not in content:
        return content
    try:
        body = json.loads(content)
    except ValueError:
        return content
    instance = body.get("instance") if isinstance(body, dict) else None
    if not isinstance(instance, str) or not instance.startswith("/v1/"):
        return content
    body["instance"] = "/api" + instance
    return json.dumps(body).encode()


def relay(response: httpx.Response, *, service: str, status_code: int | None = None) -> Response:
    """The service's answer as our answer: body, status and the headers that matter to a client.

    A ``Location`` (and a problem's ``instance``) under ``/v1/`` is rewritten to the gateway's ``/api/v1/``. A 5xx
    other than 503/504 becomes a 502 problem naming the service (its details stay in its own logs)."""
    if response.status_code >= 500 and response.status_code not in (503, 504):
        from servicekit.problems import problem_response

        return problem_response(
            502, title=BadGateway.title, slug=BadGateway.slug, detail=f"The {service} service failed.", service=service
        )
    headers = {name: response.headers[name] for name in _PASSED_HEADERS if name in response.headers}
    location = response.headers.get("location")
    if location:
        headers["location"] = "/api" + location if location.startswith("/v1/") else location
    media_type = response.headers.get("content-type", "application/json")
    content = response.content
    if response.status_code >= 400 and "json" in media_type:
        if "problem" not in media_type:
            media_type = PROBLEM_MEDIA_TYPE
        content = _public_instance(content)
    return Response(
        content=content,
        status_code=status_code or response.status_code,
        media_type=media_type,
        headers=headers,
    )
