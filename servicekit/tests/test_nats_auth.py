"""NATS refuses anonymous connections, and each user may do only its part (servicekit.natsauth) on a real server."""

from __future__ import annotations

from typing import Any

import nats
import pytest

from servicekit.natsauth import USERS_FILES, inbox_prefix, render_users
from servicekit.testing.nats import NatsServer
from servicekit.testing.plugin import eventually


async def connect(server: NatsServer, user: str, errors: list[str]) -> Any:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(server.url_for(user), inbox_prefix=inbox_prefix(user), error_cb=on_error,
                              allow_reconnect=False)  # fmt: skip


async def delivered(server: NatsServer, subject: str, publish: Any, *, last: bytes | None = None) -> list[bytes]:
    """What the admin receives on ``subject`` while ``publish()`` runs (the round trip settles it).

    ``last``: the message ``publish()`` sends last on its own connection, awaited too: messages of two
    connections reach a subscriber in no set order (CI once saw the admin's marker before the touchpoint)."""
    admin = await nats.connect(server.url)
    got: list[bytes] = []

    async def received(msg: Any) -> None:
        got.append(msg.data)

    sub = await admin.subscribe(subject, cb=received)
    # nats-py 2.16's flush() writes its PING ahead of the commands still queued (this SUB among them), so its PONG
    # does not prove the subscription is in place (1 run in 10 lost the ingest user's touchpoint that way). A
    # message of our own coming back does: it was queued after the SUB.
    assert subject.endswith(">"), subject
    await admin.publish(subject[:-1] + "ready", b"ready")
    await eventually(lambda: b"ready" in got, timeout=10)
    await publish()
    await admin.publish(subject, b"marker")
    try:
        await eventually(lambda: b"marker" in got and (last is None or last in got), timeout=10)
    except AssertionError as exc:
        # What did arrive, and whether the admin's connection held, say which side lost it (CI saw this once).
        raise AssertionError(f"{exc}; received {got!r}, admin connected: {admin.is_connected}") from None
    await sub.unsubscribe()
    await admin.close()
    return [g for g in got if g not in (b"marker", b"ready")]


async def test_an_anonymous_connection_is_refused(nats_server: NatsServer) -> None:
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(nats_server.anonymous_url, allow_reconnect=False, max_reconnect_attempts=0,
                           connect_timeout=2)  # fmt: skip
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(nats_server.url_for("ingest").replace("@", "x@"), allow_reconnect=False,
                           max_reconnect_attempts=0, connect_timeout=2)  # fmt: skip


async def test_the_ingest_user_publishes_touchpoints_and_nothing_else(nats_server: NatsServer) -> None:
    errors: list[str] = []
    ingest = await connect(nats_server, "ingest", errors)
    try:
        # It may not read the events...
        await ingest.subscribe("crm.>")
        await ingest.flush()
        await eventually(lambda: any("subscription" in e.lower() and "crm.>" in e for e in errors), timeout=5)
        # ...nor anyone's replies (pulled messages are replies)...
        await ingest.subscribe("_INBOX.>")
        await ingest.subscribe("_INBOX_gateway.>")
        await ingest.flush()
        await eventually(lambda: sum("subscription" in e.lower() for e in errors) >= 3, timeout=5)
        # ...nor publish a contact's event or a dead letter; it may publish touchpoints.
        # The forged ones come before the touchpoint on the same connection, so they would be in by then.
        try:
            got = await delivered(nats_server, "crm.>", lambda: ingest_publish(ingest), last=b"touchpoint")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; ingest connected: {ingest.is_connected}, its errors: {errors}") from None
        assert got == [b"touchpoint"]
        assert any("publish" in e.lower() and "crm.contacts.created" in e for e in errors), errors
        assert any("publish" in e.lower() and "crm.ingest.deadletter" in e for e in errors), errors
    finally:
        await ingest.close()


async def ingest_publish(ingest: Any) -> None:
    await ingest.publish("crm.contacts.created.0190", b"forged contact")
    await ingest.publish("crm.ingest.deadletter", b"forged dead letter")
    await ingest.publish("crm.ingest.interactions", b"touchpoint")
    await ingest.flush()


async def test_a_service_publishes_its_own_events_only(nats_server: NatsServer) -> None:
    errors: list[str] = []
    followups = await connect(nats_server, "followups", errors)
    contacts = await connect(nats_server, "contacts", errors)
    try:

        async def publish() -> None:
            await followups.publish("crm.contacts.erased.0190", b"forged by followups")
            await followups.publish("crm.followups.due.0190", b"followups' own")
            await contacts.publish("crm.interactions.logged.0190", b"forged by contacts")
            await contacts.publish("crm.contacts.created.0190", b"contacts' own")
            await followups.flush()
            await contacts.flush()

        assert sorted(await delivered(nats_server, "crm.>", publish)) == [b"contacts' own", b"followups' own"]
        assert any("crm.contacts.erased" in e for e in errors) and any("crm.interactions.logged" in e for e in errors)
        # Nor may it read another service's consumer or stream through the JetStream API.
        await followups.subscribe("crm.contacts.>")
        await followups.flush()
        await eventually(lambda: any("subscription" in e.lower() for e in errors), timeout=5)
    finally:
        await followups.close()
        await contacts.close()


def test_the_deployments_users_files_are_generated_from_the_code() -> None:
    for path in USERS_FILES:
        assert path.read_text() == render_users(), f"{path} is stale: run `python -m servicekit.natsauth`"
