"""The contacts service as the interactions service sees it: which live contact a touchpoint belongs to.

Contacts answer over HTTP (``GET /v1/contacts/{id}``, ``POST /v1/contacts/resolve-many`` for identities this
service's own copy does not know: services/interactions/identities.py). Live contact ids
are remembered in memory, so a touchpoint given by ``contact_id`` costs no call once its contact is
known; the merge and erase events make us forget them (and the write transaction checks the
``contact_fates`` table, so a stale memory never files a touchpoint under a dead contact).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx

from servicekit.clients import service_client
from servicekit.logging import get_logger
from servicekit.problems import ContactsUnavailable, ProblemError, Unprocessable
from services.interactions.schemas import ContactByIdentity

log = get_logger(__name__)

# Once the contacts service is known to be down, calls fail at once for this long instead of each waiting for
# its own timeout. Refusing the connection shows it down at once; a timeout or a dropped connection only after
# this many in a row (one slow answer on a saturated machine is no reason to fail everyone's calls).
FAIL_FAST_S = 1.0
FAILURES_BEFORE_FAIL_FAST = 3
MAX_MERGE_HOPS = 4


class UnknownContact(Unprocessable):
    slug, title = "unknown-contact", "No such contact"


class ContactErased(Unprocessable):
    slug, title = "contact-erased", "Contact erased"


class ContactRejected(Unprocessable):
    """The contacts service refused the identity or the new contact's fields."""

    slug, title = "contact-rejected", "Contact refused by the contacts service"


# Items of one resolve-many call (the contacts service's limit).
RESOLVE_MANY_MAX = 500
# A resolve-many call may make a new contact per item, a dozen statements each (measured with the machine's load
# average at 30 on 2 cores: 20 ms each on SQLite, 140 ms on PostgreSQL; finding known ones is one query): its timeout
# grows by this much per item, so a batch of new customers is not taken for a contacts service that is down.
RESOLVE_MANY_S_PER_ITEM = 0.1


@dataclass(frozen=True)
class ContactLink:
    """Where a touchpoint is filed (``contact_id``) and which contact it was logged for (``original``).
    ``learned``: the digest of the identity the contacts service just resolved to it, for the local copy."""

    contact_id: uuid.UUID
    original: uuid.UUID
    learned: bytes | None = None


class ContactDirectory:
    def __init__(
        self,
        *,
        base_url: str,
        timeout_s: float,
        concurrency: int,
        cache_size: int,
        retry_after_s: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.http = service_client(
            base_url, timeout=httpx.Timeout(timeout_s), connections=concurrency, transport=transport
        )
        self.timeout_s = timeout_s
        self.cache_size = cache_size
        self.retry_after_s = retry_after_s
        self._live: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._down_until = 0.0
        self._failures_in_a_row = 0
        self._gate = asyncio.Semaphore(concurrency)

    async def close(self) -> None:
        await self.http.aclose()

    def forget(self, contact_id: uuid.UUID) -> None:
        self._live.pop(contact_id, None)

    def knows_live(self, contact_id: uuid.UUID) -> bool:
        return contact_id in self._live

    def _remember(self, contact_id: uuid.UUID) -> None:
        self._live[contact_id] = None
        self._live.move_to_end(contact_id)
        while len(self._live) > self.cache_size:
            self._live.popitem(last=False)

    async def link_by_id(self, contact_id: uuid.UUID) -> ContactLink:
        """The live contact for ``contact_id``: itself, or the contact it was merged into."""
        if contact_id in self._live:
            return ContactLink(contact_id, contact_id)
        current = contact_id
        for _ in range(MAX_MERGE_HOPS):
            response = await self._call("GET", f"/v1/contacts/{current}")
            if response.status_code == 200:
                self._remember(current)
                return ContactLink(current, contact_id)
            if response.status_code == 308:
                current = uuid.UUID(str(_json(response).get("merged_into")))
                continue
            if response.status_code == 410:
                raise ContactErased(f"Contact {current} was erased; no touchpoint can be logged for it.")
            if response.status_code == 404:
                raise UnknownContact(f"No contact {contact_id}.", contact_id=str(contact_id))
            raise self._unavailable(f"the contacts service answered {response.status_code}")
        raise UnknownContact(f"Contact {contact_id} leads through too many merges.")

    async def resolve_many(self, contacts: list[ContactByIdentity]) -> list[uuid.UUID | ProblemError]:
        """The contact holding each identity, made when nobody does (``POST /v1/contacts/resolve-many``, one call per
        ``RESOLVE_MANY_MAX`` of them), or the problem the contacts service found with that item. The contacts
        service unreachable or failing: ``ContactsUnavailable`` raised for all."""
        found: list[uuid.UUID | ProblemError] = []
        for start in range(0, len(contacts), RESOLVE_MANY_MAX):
            chunk = contacts[start : start + RESOLVE_MANY_MAX]
            items = [contact.resolve_request() for contact in chunk]
            timeout = httpx.Timeout(self.timeout_s + RESOLVE_MANY_S_PER_ITEM * len(items))
            response = await self._call("POST", "/v1/contacts/resolve-many", json={"items": items}, timeout=timeout)
            if response.status_code != 200:
                raise self._unavailable(f"the contacts service answered {response.status_code} to resolve-many")
            results = _json(response).get("results")
            if not isinstance(results, list) or len(results) != len(chunk):
                raise self._unavailable("the contacts service's resolve-many answer does not match the request")
            for result in results:
                found.append(_resolved(result))
        for outcome in found:
            if isinstance(outcome, uuid.UUID):
                self._remember(outcome)
        return found

    async def _call(
        self, method: str, path: str, json: Any = None, timeout: httpx.Timeout | None = None
    ) -> httpx.Response:
        if time.monotonic() < self._down_until:
            raise self._unavailable("the contacts service did not answer a moment ago")
        try:
            async with self._gate:
                response = await self.http.request(
                    method,
                    path,
                    json=json,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
        except httpx.HTTPError as exc:
            self._failures_in_a_row += 1
            if isinstance(exc, httpx.ConnectError) or self._failures_in_a_row >= FAILURES_BEFORE_FAIL_FAST:
                self._down_until = time.monotonic() + FAIL_FAST_S
            log.warning("contacts_unreachable", error=repr(exc), failures_in_a_row=self._failures_in_a_row)
            raise self._unavailable(f"the contacts service is unreachable ({type(exc).__name__})") from None
        self._failures_in_a_row = 0
        return response

    def _unavailable(self, why: str) -> ContactsUnavailable:
        return ContactsUnavailable(
            f"The contact could not be checked: {why}. Retry later.", retry_after=self.retry_after_s
        )


def _resolved(result: Any) -> uuid.UUID | ProblemError:
    """One item of a resolve-many answer: the contact's id, or why the contacts service refused it."""
    if not isinstance(result, dict):
        return ContactRejected("The contacts service gave no answer for this contact.")
    if result.get("status") in (200, 201) and result.get("id"):
        return uuid.UUID(str(result["id"]))
    problem = result.get("problem")
    if not isinstance(problem, dict):
        problem = {}
    return ContactRejected(
        str(problem.get("detail") or "The contacts service refused the contact."), errors=problem.get("errors")
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
