"""A policy preview of a draft nobody saved: the same replay as a saved policy's, per step created, skipped (with
reasons) and closed by a later touchpoint of the replayed days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
    assert body["steps"]["thanks"] == {"created": 2, "skipped": {}, "closed": {}}
    assert {i["channel"] for i in body["items"]} == {"sms", "email"}
    assert await harness.followups(policy="call-thanks") == []  # neither preview wrote anything
    unsaved = await harness.client.post("/v1/policies/preview", json={**draft, "id": "never-saved"})
    assert unsaved.json()["version"] == 0 and unsaved.json()["policy"] == "never-saved"

    broken = {**draft, "steps": [{"id": "x", "offset": "soon"}]}
    invalid = await harness.client.post("/v1/policies/preview", json=broken)
    assert invalid.status_code == 422 and invalid.headers["content-type"] == "application/problem+json"
    assert invalid.json()["errors"], invalid.json()
