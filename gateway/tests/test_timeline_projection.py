"""The timeline projection (``timeline_items``): versions, erasure, merges, and the migration that made it."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy import select

from gateway import events
from gateway.models import ContactEvent
from gateway.projection import TABLE, contact_event_item, to_json
from gateway.tests.conftest import ADMIN, ALEMBIC_INI, StubServices
from servicekit.db import make_engine
from servicekit.events import CloudEvent, make_event
from servicekit.migrations import upgrade
from servicekit.testing.storage import StorageScan

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _app(gateway: httpx.AsyncClient) -> FastAPI:
    app: FastAPI = gateway._transport.app  # type: ignore[attr-defined]
    return app


async def _apply(gateway: httpx.AsyncClient, *applied: CloudEvent) -> None:
    """As the gateway's consumers do: each event's handler in a transaction, then the announcement."""
    app = _app(gateway)
    for event in applied:
        async with app.state.runtime.sessionmaker() as session, session.begin():
            if event.type in events.CONTACT_HANDLERS:
                await events.CONTACT_HANDLERS[event.type](session, event)
            else:
                await events.apply(session, [event])
        app.state.timeline.forget_header(event.subject)
        if event.type == events.CONTACT_MERGED:
            app.state.timeline.forget_header(event.data["source_id"])


def _touchpoint(contact_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()), "contact_id": contact_id, "original_contact_id": contact_id, "channel": "email",
        "direction": "inbound", "type": "complaint", "occurred_at": T0.isoformat(), "received_at": T0.isoformat(),
        "subject": "Broken on arrival", "outcome": None, "attributes": {}, "csat": None, "version": 1, **fields,
    }  # fmt: skip


def _event(type_: str, contact_id: str, data: dict[str, Any], at: datetime = T0) -> CloudEvent:
    return make_event(type=type_, source="test", subject=contact_id, data=data, time=at)


async def _items(gateway: httpx.AsyncClient, contact_id: str, query: str = "") -> list[dict[str, Any]]:
    response = await gateway.get(f"/api/v1/contacts/{contact_id}/timeline?limit=100{query}", headers=ADMIN)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def _stored_documents(gateway: httpx.AsyncClient) -> str:
    async with _app(gateway).state.runtime.sessionmaker() as session:
        return json.dumps((await session.scalars(select(TABLE.c.document))).all())


async def test_a_touchpoint_takes_newer_versions_only_and_its_body_is_never_kept(
    gateway: httpx.AsyncClient, stub: StubServices
) -> None:
    contact = stub.add_contact()
    touch = _touchpoint(contact["id"], body="The parcel was crushed")  # a producer that sent the body anyway
    await _apply(gateway, _event(events.INTERACTION_LOGGED, contact["id"], touch))
    newer = {**touch, "outcome": "refund issued", "version": 3}
    older = {**touch, "outcome": "waiting for the courier", "version": 2}
    await _apply(gateway, _event(events.INTERACTION_UPDATED, contact["id"], newer))
    await _apply(gateway, _event(events.INTERACTION_UPDATED, contact["id"], older))  # arrives late

    [item] = await _items(gateway, contact["id"], "&kinds=interaction")
    assert item["id"] == touch["id"] and item["outcome"] == "refund issued" and item["version"] == 3
    assert item["summary"] == "refund issued" and item["title"] == "Broken on arrival"
    assert "body" not in item
    assert "crushed" not in await _stored_documents(gateway)


async def test_an_erasure_redacts_the_touchpoints_at_once_and_for_good(
    gateway: httpx.AsyncClient, stub: StubServices
) -> None:
    erased, kept = stub.add_contact(), stub.add_contact()
    secret = _touchpoint(erased["id"], subject="Ada's broken laptop", outcome="Ada called back", attributes={"n": 1})
    other = _touchpoint(kept["id"], subject="Keep me")
    thanked = {
        "id": str(uuid.uuid4()), "contact_id": erased["id"], "reason": "Thank-you call", "channel": "phone",
        "status": "completed", "outcome": "Ada said thanks", "due_at": T0.isoformat(),
        "timeline_at": (T0 - timedelta(days=1)).isoformat(), "version": 2,
    }  # fmt: skip
    await _apply(
        gateway,
        _event(events.INTERACTION_LOGGED, erased["id"], secret),
        _event(events.INTERACTION_LOGGED, kept["id"], other),
        _event("crm.followup.completed.v1", erased["id"], thanked),
        # The gateway redacts on the contact's erasure, before the interactions service says it did.
        _event(events.CONTACT_ERASED, erased["id"], {"contact_id": erased["id"]}, T0 + timedelta(hours=1)),
        # An update made before the erasure, arriving after it, does not bring the subject back.
        _event(events.INTERACTION_UPDATED, erased["id"], {**secret, "version": 2}),
    )
    # What arrives from the other streams after the erasure is stored without the personal fields too: a
    # touchpoint logged before it, a follow-up done before it (the follow-ups service clears its outcome without
    # an event: the gateway does the same).
    late = _touchpoint(erased["id"], subject="Ada again", occurred_at=(T0 - timedelta(hours=1)).isoformat())
    done = {
        "id": str(uuid.uuid4()), "contact_id": erased["id"], "reason": "Call back", "channel": "phone",
        "status": "completed", "outcome": "Ada was happy", "due_at": T0.isoformat(), "timeline_at": T0.isoformat(),
        "version": 2,
    }  # fmt: skip
    await _apply(
        gateway,
        _event(events.INTERACTION_LOGGED, erased["id"], late),
        _event("crm.followup.completed.v1", erased["id"], done),
        _event("crm.followup.completed.v1", erased["id"], {**done, "version": 3}),  # and a newer version of it
    )
    done_item, thanked_item = await _items(gateway, erased["id"], "&kinds=followup")
    assert done_item["outcome"] is None and done_item["version"] == 3 and done_item["type"] == "completed"
    assert thanked_item["id"] == thanked["id"] and thanked_item["outcome"] is None
    item, late_item = await _items(gateway, erased["id"], "&kinds=interaction")
    assert late_item["subject"] is None and late_item["id"] == late["id"]
    assert item["subject"] is None and item["outcome"] is None and item["attributes"] == {}
    assert item["redacted_at"] is not None and item["channel"] == "email" and item["type"] == "complaint"
    assert "Ada" not in await _stored_documents(gateway)
    assert [i["subject"] for i in await _items(gateway, kept["id"], "&kinds=interaction")] == ["Keep me"]

    # crm.interaction.redacted.v1 alone (a gateway that missed the erasure) redacts too; twice changes nothing.
    late = _touchpoint(kept["id"], subject="Grace's order")
    await _apply(gateway, _event(events.INTERACTION_LOGGED, kept["id"], late))
    redacted = {"contact_id": kept["id"], "interactions": 2, "redacted_at": T0.isoformat()}
    for _ in range(2):
        await _apply(gateway, _event(events.INTERACTION_REDACTED, kept["id"], redacted))
    assert {i["subject"] for i in await _items(gateway, kept["id"], "&kinds=interaction")} == {None}
    assert "Grace" not in await _stored_documents(gateway)


async def test_an_erasure_covers_the_merged_duplicate_its_thread_ids_and_manual_reasons(
    gateway: httpx.AsyncClient, stub: StubServices, gateway_db: str
) -> None:
    """Issue 18.2 and 18.4: a duplicate merged into the erased contact was the same person: its items go too,
    and so do the thread and external ids (they may hold an identity) and a manual follow-up's reason, down to the
    database file (WAL included)."""
    target = stub.add_contact()
    source = stub.add_contact(status="merged", merged_into=target["id"])
    touch = _touchpoint(
        source["id"], subject="Zed's parcel", thread_id="mail:zed@example.org", external_id="mail:zed@example.org/7"
    )
    manual = {
        "id": str(uuid.uuid4()), "contact_id": source["id"], "reason": "Call back Zed", "channel": "phone",
        "status": "scheduled", "policy": None, "thread_id": "mail:zed@example.org", "due_at": T0.isoformat(),
        "timeline_at": T0.isoformat(), "version": 1,
    }  # fmt: skip
    policy_made = {
        **manual,
        "id": str(uuid.uuid4()),
        "policy": "complaint-callback",
        "reason": "Call back after a complaint",
    }
    merged = {"source_id": source["id"], "target_id": target["id"], "contact": target}
    await _apply(
        gateway,
        _event(events.INTERACTION_LOGGED, source["id"], touch),
        _event("crm.followup.scheduled.v1", source["id"], manual),
        _event("crm.followup.scheduled.v1", source["id"], policy_made),
        _event(events.CONTACT_MERGED, target["id"], merged),
        _event(events.CONTACT_ERASED, target["id"], {"contact_id": target["id"]}, T0 + timedelta(hours=1)),
    )
    items = {i["id"]: i for i in await _items(gateway, target["id"], "&kinds=interaction,followup")}
    assert items[manual["id"]]["reason"] == "(erased)" and items[manual["id"]]["thread_id"] is None
    assert items[policy_made["id"]]["reason"] == "Call back after a complaint"  # the policy's words, kept
    assert items[touch["id"]]["thread_id"] is None and items[touch["id"]]["external_id"] is None
    scan = StorageScan()
    scan.add_database(gateway_db)
    await scan.assert_clean(["Zed", "zed@example.org"])


async def test_a_merge_moves_touchpoints_and_follow_ups_to_the_target(
    gateway: httpx.AsyncClient, stub: StubServices
) -> None:
    target = stub.add_contact()
    source = stub.add_contact(status="merged", merged_into=target["id"])
    touch = _touchpoint(source["id"])
    followup = {
        "id": str(uuid.uuid4()), "contact_id": source["id"], "reason": "Call back", "channel": "phone",
        "status": "scheduled", "due_at": (T0 + timedelta(days=1)).isoformat(),
        "timeline_at": (T0 + timedelta(days=1)).isoformat(), "version": 1,
    }  # fmt: skip
    await _apply(
        gateway,
        _event(events.INTERACTION_LOGGED, source["id"], touch),
        _event("crm.followup.scheduled.v1", source["id"], followup),
        _event(events.CONTACT_MERGED, target["id"], {"source_id": source["id"], "target_id": target["id"]}),
    )
    items = await _items(gateway, source["id"], "&kinds=interaction,followup")  # answers with the target's
    assert [(i["kind"], i["id"]) for i in items] == [("followup", followup["id"]), ("interaction", touch["id"])]
    assert {i["contact_id"] for i in items} == {target["id"]}
    assert items[1]["original_contact_id"] == source["id"]
    async with _app(gateway).state.runtime.sessionmaker() as session:
        keys = (await session.execute(select(TABLE.c.contact_id, TABLE.c.original_contact_id))).all()
    assert {str(c) for c, _ in keys} == {target["id"]}

    # A touchpoint of the source applied after the merge lands under the target too.
    late = _touchpoint(source["id"], occurred_at=(T0 + timedelta(hours=1)).isoformat())
    await _apply(gateway, _event(events.INTERACTION_LOGGED, source["id"], late))
    assert (await _items(gateway, target["id"], "&kinds=interaction"))[0]["contact_id"] == target["id"]


async def test_the_migration_copies_the_contact_events_as_the_projection_writes_them(
    db_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if db_backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    else:
        url = request.getfixturevalue("pg_cluster").create_database(f"m_{uuid.uuid4().hex[:12]}")
    await asyncio.to_thread(upgrade, ALEMBIC_INI, url, "0d55fc2efc42")
    row = ContactEvent(
        id=uuid.uuid4(), contact_id=uuid.uuid4(), original_contact_id=uuid.uuid4(), at=T0, type="stage_changed",
        title="Stage changed", summary="Stage lead → customer.", detail={"stage": {"from": "lead", "to": "customer"}},
    )  # fmt: skip
    engine = make_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.insert(ContactEvent.__table__).values(**row.model_dump()))  # type: ignore[attr-defined]
        await asyncio.to_thread(upgrade, ALEMBIC_INI, url)
        async with engine.connect() as connection:
            stored = (await connection.execute(select(TABLE))).one()
    finally:
        await engine.dispose()
    assert json.loads(stored.document) == json.loads(to_json(contact_event_item(row)))
    assert (stored.id, stored.contact_id, stored.sort_rank, stored.type) == (row.id, row.contact_id, 0, row.type)


async def test_a_batch_of_events_is_applied_as_the_events_one_by_one_would_be(
    gateway: httpx.AsyncClient, stub: StubServices
) -> None:
    contact = stub.add_contact()
    first = _touchpoint(contact["id"], csat=2)
    second = _touchpoint(contact["id"], csat=4, occurred_at=(T0 + timedelta(hours=1)).isoformat())
    batch = [
        _event(events.INTERACTION_LOGGED, contact["id"], first),
        _event(events.INTERACTION_UPDATED, contact["id"], {**first, "outcome": "refunded", "version": 3}),
        _event(events.INTERACTION_UPDATED, contact["id"], {**first, "outcome": "stale", "version": 2}),
        _event(events.INTERACTION_LOGGED, contact["id"], second),
    ]
    async with _app(gateway).state.runtime.sessionmaker() as session, session.begin():
        await events.apply(session, batch)  # one transaction, as the consumer applies a fetched batch
    newest, oldest = await _items(gateway, contact["id"], "&kinds=interaction")
    assert (newest["id"], oldest["id"]) == (second["id"], first["id"])
    assert (oldest["outcome"], oldest["version"]) == ("refunded", 3)
    header = (await gateway.get(f"/api/v1/contacts/{contact['id']}/timeline", headers=ADMIN)).json()["contact"]
    assert header["last_touch_per_channel"] == [{"channel": "email", "last_at": second["occurred_at"], "touches": 2}]
    assert header["csat_average"] == 3.0 and header["csat_responses"] == 2


async def test_a_batch_of_follow_up_events_costs_the_same_few_statements_however_long_it_is(
    gateway: httpx.AsyncClient, stub: StubServices
) -> None:
    """A statement per event (a look-up of each follow-up's state, and the flush it set off) made the follow-up
    consumer wait for a turn of the event loop once per event: under load it fell 20 s behind the touchpoints."""
    contact = stub.add_contact()
    due = (T0 + timedelta(days=2)).isoformat()

    def followup_event(type_: str, followup_id: str, at: datetime = T0, **fields: Any) -> CloudEvent:
        return _event(type_, contact["id"], {"id": followup_id, "contact_id": contact["id"], **fields}, at)

    def scheduled(followup_id: str) -> CloudEvent:
        return followup_event("crm.followup.scheduled.v1", followup_id, reason="Thank you", channel="email",
                              status="scheduled", due_at=due, timeline_at=due, version=1)  # fmt: skip

    async def statements_to_apply(batch: list[CloudEvent]) -> list[str]:
        sent: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            sent.append(statement)

        async with _app(gateway).state.runtime.sessionmaker() as session, session.begin():
            # This transaction's connection only: the gateway's own outbox relay shares the engine.
            connection = (await session.connection()).sync_connection
            assert connection is not None
            sa.event.listen(connection, "before_cursor_execute", record)
            try:
                await events.apply(session, batch)
                await session.flush()
            finally:
                sa.event.remove(connection, "before_cursor_execute", record)
        return sent

    few = [str(uuid.uuid4()) for _ in range(2)]
    many = [str(uuid.uuid4()) for _ in range(200)]
    assert len(await statements_to_apply([scheduled(f) for f in few])) == len(
        await statements_to_apply([scheduled(f) for f in many])
    )
    # A follow-up stored before, and one made earlier in the same batch, are found without a query of their own.
    fresh = str(uuid.uuid4())
    sent = await statements_to_apply([
        followup_event("crm.followup.completed.v1", many[0], T0 + timedelta(hours=1), status="completed"),
        scheduled(fresh),
        followup_event("crm.followup.due.v1", fresh, T0 + timedelta(minutes=5), status="due"),
    ])  # fmt: skip
    looked_up = [s for s in sent if s.lstrip().upper().startswith("SELECT") and "followup_states" in s]
    assert len(looked_up) == 1, sent
    header = (await gateway.get(f"/api/v1/contacts/{contact['id']}/timeline", headers=ADMIN)).json()["contact"]
    assert header["open_followups"] == len(few) + len(many) - 1 + 1  # all but the completed one, and the fresh one
