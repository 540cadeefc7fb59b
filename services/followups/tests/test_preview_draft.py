"""A policy preview of a draft nobody saved: the same replay as a saved policy's, per step created, skipped (with
reasons) and closed by a later touchpoint of the replayed days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.followups.tests.conftest import Harness

MONDAY_10 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
SAVED = {
    "id": "call-thanks", "name": "Thanks after a call", "enabled": False,
    "trigger": {"event": "interaction.logged", "all": {"type": ["inquiry"], "direction": ["inbound"]}},
    "steps": [{"id": "thanks", "offset": "P3D", "reason": "Thank them for calling."}],
    "channel": {"use": "sms", "fallback": []}, "quiet_hours": None, "closing": {"reply_from": "created"},
}  # fmt: skip


async def test_a_draft_preview_differs_from_the_saved_one_and_says_what_closes(harness: Harness) -> None:
    harness.clock.set(MONDAY_10)
    texts = await harness.contact(preferred_channel="sms", consent={"sms": True})
    no_texts = await harness.contact(preferred_channel="sms", consent={"sms": False})
    for contact in (texts, no_texts):
        event = await harness.touch(contact["id"], type="inquiry", direction="inbound", channel="phone", thread_id=None)
        await harness.applied(event.id)
    harness.clock.set(MONDAY_10 + timedelta(days=1))
    # The next day an agent texts the first customer back (outbound, no thread, on sms).
    answer = await harness.touch(texts["id"], type="support", direction="outbound", channel="sms")
    await harness.applied(answer.id)
    harness.clock.set(MONDAY_10 + timedelta(days=2))
    assert (await harness.client.post("/v1/policies", json=SAVED)).status_code == 201

    saved = (await harness.client.post("/v1/policies/call-thanks/preview")).json()
    assert saved["draft"] is False and saved["version"] == 1
    assert saved["steps"]["thanks"]["created"] == 1 and saved["steps"]["thanks"]["skipped"] == {"opted_out": 1}
    # Closing counts from the trigger: the sms reply the next day would have done the saved policy's thank-you.
    assert saved["steps"]["thanks"]["closed"] == {"outbound_on_its_channel": 1}
    closed = [i for i in saved["items"] if i["status"] == "closed"]
    assert [(i["contact_id"], i["closed_by"]) for i in closed] == [(texts["id"], answer.data["id"])]

    # The draft falls back to email and counts only from its due time: nobody is skipped, nothing closed yet.
    draft = {**SAVED, "channel": {"use": "sms", "fallback": ["email"]}, "closing": {"reply_from": "due"}}
    previewed = await harness.client.post("/v1/policies/preview", json=draft, params={"days": 30})
    assert previewed.status_code == 200, previewed.text
    body = previewed.json()
    assert body["draft"] is True and body["version"] == 1  # the saved version it would replace
    assert body["steps"]["thanks"] == {"created": 2, "skipped": {}, "closed": {}, "repeated": {}}
    assert {i["channel"] for i in body["items"]} == {"sms", "email"}
    assert await harness.followups(policy="call-thanks") == []  # neither preview wrote anything
    unsaved = await harness.client.post("/v1/policies/preview", json={**draft, "id": "never-saved"})
    assert unsaved.json()["version"] == 0 and unsaved.json()["policy"] == "never-saved"

    broken = {**draft, "steps": [{"id": "x", "offset": "soon"}]}
    invalid = await harness.client.post("/v1/policies/preview", json=broken)
    assert invalid.status_code == 422 and invalid.headers["content-type"] == "application/problem+json"
    assert invalid.json()["errors"], invalid.json()


async def test_the_preview_handles_a_repeated_trigger_as_the_drafts_repeat_says(harness: Harness) -> None:
    """Three purchases in a week: ``covered`` and ``reanchor`` leave one thank-you (counted as repeated), ``stack``
    makes three, as the stored engine does."""
    harness.clock.set(MONDAY_10)
    buyer = await harness.contact(preferred_channel="email", consent={"email": True})
    bought = []
    for day in range(3):
        harness.clock.set(MONDAY_10 + timedelta(days=day))
        event = await harness.touch(buyer["id"], type="purchase", direction="inbound", channel="web", thread_id=None)
        await harness.applied(event.id)
        bought.append(MONDAY_10 + timedelta(days=day))
    harness.clock.set(MONDAY_10 + timedelta(days=3))
    draft = {
        **SAVED, "id": "thanks-for-buying", "channel": {"use": "email", "fallback": []},
        "trigger": {"event": "interaction.logged", "all": {"type": ["purchase"]}},
        "steps": [{"id": "thanks", "offset": "P10D", "reason": "Thank them for the order."}],
    }  # fmt: skip

    async def previewed(repeat: str) -> dict[str, Any]:
        answer = await harness.client.post("/v1/policies/preview", json={**draft, "repeat": repeat})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    covered = await previewed("covered")
    assert covered["steps"]["thanks"]["created"] == 1 and covered["steps"]["thanks"]["repeated"] == {"covered": 2}
    assert covered["count"] == 1 and len(covered["items"]) == 1
    assert datetime.fromisoformat(covered["items"][0]["anchor_at"]) == bought[0]

    reanchored = await previewed("reanchor")
    assert reanchored["steps"]["thanks"]["repeated"] == {"reanchored": 2} and reanchored["count"] == 1
    # Its due time counts from the last purchase.
    assert datetime.fromisoformat(reanchored["items"][0]["anchor_at"]) == bought[-1]

    stacked = await previewed("stack")
    assert stacked["steps"]["thanks"]["created"] == 3 and stacked["steps"]["thanks"]["repeated"] == {}
