"""The contacts service, asked about a contact the follow-ups service has not heard of yet.

``GET /v1/contacts/{id}``: 200 the contact; 308 merged (body ``merged_into``); 410 erased; 404 unknown.
Anything else, or no answer, is a passing cause: the event is redelivered later, never dropped.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from servicekit.clients import service_client
from servicekit.logging import get_logger
from servicekit.problems import ContactsUnavailable

log = get_logger(__name__)

MAX_MERGE_HOPS = 4


@dataclass(frozen=True)
class ContactAnswer:
    """``contact`` is the live contact (the merge target when ``asked`` was merged away); ``erased`` when
    the chain ends at an erased contact; ``unknown`` when no contact has the id."""

    asked: uuid.UUID
    contact: dict[str, Any] | None = None
    merged_from: tuple[uuid.UUID, ...] = ()
    erased: bool = False
    unknown: bool = False


class ContactDirectory:
    def __init__(
        self,
        *,
        base_url: str,
        timeout_s: float,
        concurrency: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.http = service_client(
            base_url, timeout=httpx.Timeout(timeout_s), connections=concurrency, transport=transport
        )
        self._gate = asyncio.Semaphore(concurrency)

    async def close(self) -> None:
        await self.http.aclose()

    async def lookup(self, contact_id: uuid.UUID) -> ContactAnswer:
        current = contact_id
        hops: list[uuid.UUID] = []
        for _ in range(MAX_MERGE_HOPS):
            try:
                async with self._gate:
                    response = await self.http.get(f"/v1/contacts/{current}")
            except httpx.HTTPError as exc:
                log.warning("contacts_unreachable", error=repr(exc))
                raise ContactsUnavailable(f"contacts unreachable: {type(exc).__name__}") from None
            if response.status_code == 200:
                return ContactAnswer(asked=contact_id, contact=_json(response), merged_from=tuple(hops))
            if response.status_code == 308:
                target = _json(response).get("merged_into")
                try:
                    hops.append(current)
                    current = uuid.UUID(str(target))
                except ValueError:
                    raise ContactsUnavailable("contacts answered 308 without merged_into") from None
                continue
            if response.status_code == 410:
                return ContactAnswer(asked=contact_id, merged_from=tuple(hops), erased=True)
            if response.status_code == 404:
                return ContactAnswer(asked=contact_id, unknown=True)
            raise ContactsUnavailable(f"contacts answered {response.status_code}")
        raise ContactsUnavailable(f"contact {contact_id} leads through too many merges")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
