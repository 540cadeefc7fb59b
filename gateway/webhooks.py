"""Outbound webhooks: subscriptions, the feed that records a delivery per (webhook, event), and the worker that
sends them.

The data path: the gateway's durable consumers (``CONSUMERS``, one per producer stream) read every event and
record one ``webhook_deliveries`` row per subscribed webhook, unique on (webhook, event), so an event delivered
twice by JetStream is recorded once. ``DeliveryWorker`` claims due rows (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; SQLite has one writer), leases them for the length of an attempt, POSTs the CloudEvent signed per
the Standard Webhooks specification and records the outcome: delivered, or retried with exponential backoff and
jitter until the retry window ends, then dead-lettered. A lease that runs out (a crashed process) makes the
row due again: a receiver may see an event twice, never zero times, and tells them apart by ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import random
import secrets
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from nats.aio.msg import Msg
from pydantic import ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from gateway.models import ContactAlias, Webhook, WebhookDelivery
from gateway.schemas import WEBHOOK_EVENT_TYPES
from gateway.settings import GatewaySettings
from servicekit.clock import Clock, as_utc
from servicekit.db import upsert
from servicekit.events import CloudEvent
from servicekit.ids import new_id
from servicekit.logging import get_logger
from servicekit.problems import Conflict, NotFound, Unprocessable

log = get_logger(__name__)

SECRET_PREFIX = "whsec_"
CONTENT_TYPE = "application/cloudevents+json"
USER_AGENT = "Touchpoint-Webhooks/1"
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
# Rows per INSERT: 16 columns each stays far below SQLite's 32,766 bound parameters.
_INSERT_CHUNK = 500
_ERROR_CHARS = 500
_T = TypeVar("_T")


def consumers() -> list[tuple[str, str, list[str]]]:
    """(stream, durable, subjects) of the webhook feed: the streams and subject filters of the gateway's own
    projection consumers (``gateway.events.CONSUMERS``, the one place they are written), under durables of
    their own (``gateway-webhooks-<producer>``): each durable sees every event once, whatever the other reads."""
    from gateway import events  # here: gateway.events imports this module for erasures

    return [
        (stream, durable.replace("gateway-", "gateway-webhooks-", 1), list(subjects))
        for stream, durable, subjects, _handlers in events.CONSUMERS
    ]


def event_types() -> set[str]:
    """The event types a webhook may ask for: every type in the catalogue of the streams the feed reads."""
    return set(WEBHOOK_EVENT_TYPES)


# --- secrets and signatures ---------------------------------------------------------------------------------------


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,`` and the base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` keyed
    with the secret's decoded bytes (Standard Webhooks 1.0)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _sealing_keys(server_secret: bytes) -> tuple[bytes, bytes]:
    root = hashlib.sha256(b"touchpoint webhook secrets\x00" + server_secret).digest()
    return hmac.new(root, b"encrypt", hashlib.sha256).digest(), hmac.new(root, b"authenticate", hashlib.sha256).digest()


def _keystream(key: bytes, nonce: bytes, length: int) -> bytes:
    blocks = (hmac.new(key, nonce + i.to_bytes(4, "big"), hashlib.sha256).digest() for i in range(length // 32 + 1))
    return b"".join(blocks)[:length]


def seal(secret: str, server_secret: bytes) -> str:
    """The secret encrypted and authenticated under keys derived from ``GATEWAY_SECRET_KEY`` (HMAC-SHA256 in
    counter mode, then HMAC-SHA256 over nonce and ciphertext): the standard library has no AEAD, and a copy of the
    database must not be enough to forge signatures. Changing ``GATEWAY_SECRET_KEY`` makes stored secrets
    unreadable: their webhooks must be made again."""
    encrypt, authenticate = _sealing_keys(server_secret)
    nonce = secrets.token_bytes(16)
    plain = secret.encode()
    cipher = bytes(a ^ b for a, b in zip(plain, _keystream(encrypt, nonce, len(plain)), strict=True))
    tag = hmac.new(authenticate, nonce + cipher, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(nonce + cipher + tag).decode()


def unseal(sealed: str, server_secret: bytes) -> str:
    encrypt, authenticate = _sealing_keys(server_secret)
    raw = base64.urlsafe_b64decode(sealed)
    nonce, cipher, tag = raw[:16], raw[16:-32], raw[-32:]
    if not hmac.compare_digest(tag, hmac.new(authenticate, nonce + cipher, hashlib.sha256).digest()):
        raise ValueError("the webhook secret was sealed with another GATEWAY_SECRET_KEY")
    return bytes(a ^ b for a, b in zip(cipher, _keystream(encrypt, nonce, len(cipher)), strict=True)).decode()


# --- where a webhook may point (SSRF) -----------------------------------------------------------------------------


class UnsafeDestination(Unprocessable):
    """The URL is not one the gateway will call."""


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope (fe80::1%eth0) is link-local anyway
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_destination(url: str, *, allow_private: bool) -> None:
    """Refuses a URL that is not http(s), or (unless ``allow_private``) whose host resolves to any loopback,
    private, link-local, shared, reserved or multicast address. Run at creation and before every attempt, since
    DNS can change; the address httpx then connects to is resolved again (a rebinding inside that window is the
    limit of this check, documented in docs/gateway.md)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeDestination("A webhook URL is http:// or https:// with a host.", field="url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeDestination("The URL's port is not a number from 0 to 65535.", field="url") from None
    if allow_private:
        return
    host = parts.hostname
    try:
        addresses = {host} if _is_ip(host) else await _resolve(host, port)
    except OSError:
        raise UnsafeDestination(f"The host {host!r} does not resolve.", field="url") from None
    refused = sorted(a for a in addresses if not _public(a))
    if refused or not addresses:
        raise UnsafeDestination(
            f"The host {host!r} resolves to a non-public address ({', '.join(refused)}); webhooks only call public "
            "addresses (GATEWAY_WEBHOOKS_ALLOW_PRIVATE=true lifts this, for development).",
            field="url",
        )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


async def _resolve(host: str, port: int) -> set[str]:
    found = await asyncio.get_running_loop().getaddrinfo(host, port, proto=6)
    return {str(sockaddr[0]) for _family, _type, _proto, _name, sockaddr in found}


# --- subscriptions ------------------------------------------------------------------------------------------------


async def create_webhook(
    *,
    session: AsyncSession,
    url: str,
    event_types_wanted: Sequence[str],
    description: str | None,
    created_by: str,
    now: datetime,
    settings: GatewaySettings,
) -> tuple[Webhook, str]:
    """A new webhook and its secret (the only time the secret leaves the gateway)."""
    unknown = sorted(set(event_types_wanted) - event_types())
    if unknown:
        raise Unprocessable(
            f"Unknown event types: {', '.join(unknown)}. See the event catalogue.", field="events", unknown=unknown
        )
    await check_destination(url, allow_private=settings.webhooks_allow_private)
    secret = new_secret()
    webhook = Webhook(
        url=url,
        events=sorted(set(event_types_wanted)),
        description=description,
        sealed_secret=seal(secret, settings.signing_key),
        created_at=now,
        created_by=created_by,
    )
    session.add(webhook)
    await session.flush()
    return webhook, secret


async def get_webhook(*, session: AsyncSession, webhook_id: uuid.UUID) -> Webhook:
    webhook = await session.get(Webhook, webhook_id)
    if webhook is None:
        raise NotFound(f"No webhook {webhook_id}.")
    return webhook


async def delete_webhook(*, session: AsyncSession, webhook_id: uuid.UUID) -> None:
    """The webhook and its deliveries, pending ones included (nothing is sent for it afterwards)."""
    webhook = await get_webhook(session=session, webhook_id=webhook_id)
    await session.execute(delete(WebhookDelivery).where(col(WebhookDelivery.webhook_id) == webhook_id))
    await session.delete(webhook)


async def list_deliveries(
    *, session: AsyncSession, webhook_id: uuid.UUID, status: str | None, before: uuid.UUID | None, limit: int
) -> list[WebhookDelivery]:
    """Newest first (ids are time-ordered), ``limit + 1`` rows so the caller knows whether a next page exists."""
    await get_webhook(session=session, webhook_id=webhook_id)
    query = select(WebhookDelivery).where(col(WebhookDelivery.webhook_id) == webhook_id)
    if status is not None:
        query = query.where(col(WebhookDelivery.status) == status)
    if before is not None:
        query = query.where(col(WebhookDelivery.id) < before)
    rows = await session.scalars(query.order_by(col(WebhookDelivery.id).desc()).limit(limit + 1))
    return list(rows.all())


async def send_again(
    *, session: AsyncSession, webhook_id: uuid.UUID, delivery_id: uuid.UUID, now: datetime, retry_window_s: float
) -> WebhookDelivery:
    """A dead-lettered delivery back in the queue, due now, with a new retry window (its attempts count on)."""
    delivery = await session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.webhook_id != webhook_id:
        raise NotFound(f"No delivery {delivery_id} of webhook {webhook_id}.")
    if delivery.status != DEAD:
        raise Conflict(f"Only a dead-lettered delivery is sent again; this one is {delivery.status}.")
    if delivery.body is None:
        raise Conflict("The contact this event was about has been erased: there is nothing left to send.")
    delivery.status, delivery.dead_lettered_at = PENDING, None
    delivery.next_attempt_at = now
    delivery.retry_until = now + timedelta(seconds=retry_window_s)
    await session.flush()
    return delivery


ERASED_BEFORE_DELIVERY = "not sent: the contact was erased before delivery"


async def forget_erased_contact(*, session: AsyncSession, event: CloudEvent, now: datetime) -> None:
    """An erasure reaches the deliveries not sent yet: the events about the erased contact (and the contacts merged
    into it) lose their bodies and are dead-lettered with the reason, in the erasure's transaction. The erasure
    event itself, which holds only ids, is still delivered."""
    contact_id = _contact_of(event)
    if contact_id is None:
        return
    merged = await session.scalars(select(col(ContactAlias.source_id)).where(col(ContactAlias.target_id) == contact_id))
    family = {contact_id, *merged.all()}
    for ident in event.data.get("merged_ids") or []:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            family.add(uuid.UUID(str(ident)))
    await session.execute(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.contact_id).in_(family),
            col(WebhookDelivery.status).in_((PENDING, DEAD)),
            col(WebhookDelivery.event_type) != event.type,
            col(WebhookDelivery.body).is_not(None),
        )
        .values(body=None, status=DEAD, next_attempt_at=None, dead_lettered_at=now, last_error=ERASED_BEFORE_DELIVERY)
    )


def _contact_of(event: CloudEvent) -> uuid.UUID | None:
    """The contact an event is about: ``data.contact_id``, else that of its document (``data.interaction``,
    ``data.followup``, ``data.contact``), else its CloudEvents ``subject``."""
    candidates: list[Any] = [event.data.get("contact_id")]
    for value in event.data.values():
        if isinstance(value, dict):
            candidates.append(value.get("contact_id"))
    contact = event.data.get("contact")
    if isinstance(contact, dict):
        candidates.append(contact.get("id"))
    candidates.append(event.subject)
    for candidate in candidates:
        if candidate:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                return uuid.UUID(str(candidate))
    return None


# --- the feed: a delivery row per (webhook, event) ----------------------------------------------------------------


class WebhookFeed:
    """The batch handler of a webhook durable consumer: records the deliveries of a fetched batch in one
    transaction, then acknowledges it. Recording is idempotent (``ON CONFLICT DO NOTHING`` on the unique
    (webhook, event)), so a batch redelivered after a crash between commit and ack records nothing twice."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        name: str,
        recorded: Callable[[], None],
        retry_delay_s: float = 2.0,
        retry_window_s: float = 24 * 3600,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.name = name
        self.recorded = recorded
        self.retry_delay_s = retry_delay_s
        self.retry_window = timedelta(seconds=retry_window_s)

    async def handle_batch(self, msgs: list[Msg]) -> None:
        decoded: list[tuple[CloudEvent, str]] = []
        for msg in msgs:
            try:
                decoded.append((CloudEvent.from_json(msg.data), msg.data.decode()))
            except (ValidationError, ValueError) as exc:
                # Not an event: the projection consumer of the same stream dead-letters it (nothing is lost).
                log.error("webhook_feed_not_an_event", consumer=self.name, subject=msg.subject, error=str(exc)[:200])
        try:
            added = await self.record(decoded)
        except Exception as exc:
            log.warning("webhook_feed_retry", consumer=self.name, error=repr(exc))
            for msg in msgs:
                await msg.nak(delay=self.retry_delay_s)
            return
        for msg in msgs:
            await msg.ack()
        if added:
            self.recorded()

    async def record(self, batch: Sequence[tuple[CloudEvent, str]]) -> int:
        """Records the deliveries of ``batch`` (event, its JSON as published); returns how many rows it offered."""
        if not batch:
            return 0
        now = self.clock.now()
        retry_until = now + self.retry_window
        async with self.sessionmaker() as session, session.begin():
            hooks = (await session.execute(select(col(Webhook.id), col(Webhook.events)))).all()
            rows = [
                {"id": new_id(), "webhook_id": hook_id, "event_id": event.id, "event_type": event.type,
                 "contact_id": _contact_of(event), "body": body, "status": PENDING, "attempts": 0,
                 "created_at": now, "next_attempt_at": now, "retry_until": retry_until}
                for event, body in batch
                for hook_id, wanted in hooks
                if event.type in wanted
            ]  # fmt: skip
            table = WebhookDelivery.__table__  # type: ignore[attr-defined]
            for start in range(0, len(rows), _INSERT_CHUNK):
                insert = upsert(session, table).values(rows[start : start + _INSERT_CHUNK])
                await session.execute(insert.on_conflict_do_nothing(index_elements=["webhook_id", "event_id"]))
        return len(rows)


# --- the worker: send, retry, dead-letter -------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    delivery_id: uuid.UUID
    event_id: str
    url: str
    sealed_secret: str
    body: str


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    retry_after_s: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def backoff_s(attempts: int, *, first_s: float, max_s: float, rng: random.Random) -> float:
    """Delay after the ``attempts``-th failure: ``first_s`` doubled per attempt up to ``max_s``, then "equal
    jitter" (between half and all of it), so receivers that failed together are not retried together."""
    ceiling = min(max_s, first_s * 2 ** min(attempts - 1, 40))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class DeliveryWorker:
    """Sends due deliveries. ``run`` is the background loop (woken by the feed, else every ``webhooks_poll_s``);
    ``run_once`` sends what is due now and returns how many attempts it made (tests move the clock, then call it
    or wait for the loop)."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        settings: GatewaySettings,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.settings = settings
        self.rng = rng or random.Random()
        # No redirects: a redirect to an internal address would walk around the destination check.
        self.client = httpx.AsyncClient(
            timeout=settings.webhooks_timeout_s, follow_redirects=False, transport=transport, trust_env=False
        )
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        await self.client.aclose()

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.run_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("webhook_worker_error", error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.webhooks_poll_s)
                self._wake.clear()
        finally:
            await self.close()

    async def run_once(self) -> int:
        total = 0
        while attempts := await _to_the_end(self._claim()):
            await asyncio.gather(*(self._attempt(attempt) for attempt in attempts))
            total += len(attempts)
        return total

    async def _claim(self) -> list[Attempt]:
        """Due rows, leased for one attempt's length (their ``next_attempt_at`` moves past it) in a short
        transaction of their own: no row lock is held while the receiver answers."""
        now = self.clock.now()
        lease = timedelta(seconds=self.settings.webhooks_timeout_s + 30)
        async with self.sessionmaker() as session, session.begin():
            query = (
                select(WebhookDelivery, col(Webhook.url), col(Webhook.sealed_secret))
                .join(Webhook, col(Webhook.id) == col(WebhookDelivery.webhook_id))
                .where(col(WebhookDelivery.status) == PENDING, col(WebhookDelivery.next_attempt_at) <= now)
                .order_by(col(WebhookDelivery.next_attempt_at))
                .limit(self.settings.webhooks_concurrency)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
            claimed = []
            for delivery, url, sealed_secret in (await session.execute(query)).all():
                delivery.next_attempt_at = now + lease
                claimed.append(Attempt(delivery.id, delivery.event_id, url, sealed_secret, delivery.body or ""))
        return claimed

    async def _attempt(self, attempt: Attempt) -> None:
        outcome = await self._send(attempt)
        await _to_the_end(self._record(attempt, outcome))

    async def _send(self, attempt: Attempt) -> Outcome:
        try:
            await check_destination(attempt.url, allow_private=self.settings.webhooks_allow_private)
        except UnsafeDestination as exc:
            return Outcome(None, f"refused: {exc.detail}")
        try:
            secret = unseal(attempt.sealed_secret, self.settings.signing_key)
        except ValueError as exc:
            return Outcome(None, str(exc))
        body = attempt.body.encode()
        timestamp = int(self.clock.now().timestamp())
        headers = {
            "content-type": CONTENT_TYPE,
            "user-agent": USER_AGENT,
            "webhook-id": attempt.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret=secret, msg_id=attempt.event_id, timestamp=timestamp, body=body),
        }
        try:
            response = await self.client.post(attempt.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return Outcome(None, f"timed out after {self.settings.webhooks_timeout_s:g} s")
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS])
        if 200 <= response.status_code < 300:
            return Outcome(response.status_code, None)
        return Outcome(
            response.status_code,
            f"HTTP {response.status_code}: {response.text[:200]}",
            retry_after_s=_retry_after(response.headers.get("retry-after")),
        )

    async def _record(self, attempt: Attempt, outcome: Outcome) -> None:
        now = self.clock.now()
        async with self.sessionmaker() as session, session.begin():
            delivery = await session.get(WebhookDelivery, attempt.delivery_id)
            if delivery is None or delivery.status != PENDING:
                return  # its webhook was deleted meanwhile
            delivery.attempts += 1
            delivery.last_attempt_at = now
            delivery.last_status_code = outcome.status_code
            if outcome.delivered:
                delivery.status, delivery.delivered_at, delivery.next_attempt_at = DELIVERED, now, None
                delivery.last_error = None
                delivery.body = None  # sent: the gateway no longer needs the event's (personal) data
                return
            delivery.last_error = (outcome.error or "failed")[:_ERROR_CHARS]
            delay = backoff_s(
                delivery.attempts,
                first_s=self.settings.webhooks_backoff_s,
                max_s=self.settings.webhooks_backoff_max_s,
                rng=self.rng,
            )
            if outcome.retry_after_s is not None:
                delay = min(max(delay, outcome.retry_after_s), self.settings.webhooks_backoff_max_s)
            next_at = now + timedelta(seconds=delay)
            if next_at > as_utc(delivery.retry_until):
                delivery.status, delivery.dead_lettered_at, delivery.next_attempt_at = DEAD, now, None
                log.error("webhook_dead_lettered", delivery_id=str(delivery.id), event_id=delivery.event_id,
                          attempts=delivery.attempts, error=delivery.last_error)  # fmt: skip
            else:
                delivery.next_attempt_at = next_at
                log.info("webhook_retry", delivery_id=str(delivery.id), attempts=delivery.attempts,
                         next_attempt_at=next_at.isoformat(), error=delivery.last_error)  # fmt: skip


async def _to_the_end(transaction: Coroutine[Any, Any, _T]) -> _T:
    """Runs a short database transaction to its end even when the caller is cancelled (the app stopping), then
    passes the cancellation on. A cancellation inside an aiosqlite call makes SQLAlchemy terminate the connection
    while its close is still queued behind: that close then waits for a thread that has already stopped, a task
    no cancellation ends, and the event loop's shutdown waited for it forever (a CI run hung 300 s)."""
    task = asyncio.ensure_future(transaction)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])  # a second cancellation (the stop's grace ran out) still ends this wait
        raise


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    return None
