"""Each shipped policy end to end: a CloudEvent on NATS → the follow-up, then the moved clock → its events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.followups.tests.conftest import Harness, resolved_event

MONDAY_10 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def at(doc: dict, name: str) -> datetime:
    return datetime.fromisoformat(doc[name])


async def test_purchase_makes_exactly_three_at_2_days_2_weeks_2_months(harness: Harness) -> None:
    harness.clock.set(MONDAY_10)
    contact = await harness.contact(owner="grace", preferred_channel="email")
    event = await harness.touch(contact["id"], type="purchase", direction="inbound", channel="in_person", amount=120.0)
    found = await harness.wait_for(3, contact_id=contact["id"], order="timeline")
    by_step = {f["step"]: f for f in found if f["policy"] == "purchase-2-2-2"}
    assert set(by_step) == {"thank-you", "check-in-2-weeks", "check-in-2-months"}
    assert at(by_step["thank-you"], "due_at") == datetime(2026, 1, 7, 10, 0, tzinfo=UTC)
    assert at(by_step["check-in-2-weeks"], "due_at") == datetime(2026, 1, 19, 10, 0, tzinfo=UTC)
    assert at(by_step["check-in-2-months"], "due_at") == datetime(2026, 3, 5, 10, 0, tzinfo=UTC)
    for doc in by_step.values():
        assert doc["status"] == "scheduled" and doc["channel"] == "email" and doc["assignee"] == "grace"
        assert doc["trigger_event_id"] == event.id and doc["timeline_at"] == doc["due_at"]
    assert "no selling" in by_step["thank-you"]["reason"]

    # Nothing is due before its time; at its time it is, once.
    assert await harness.scheduler.tick() == 0
    harness.clock.set(datetime(2026, 1, 7, 9, 59, tzinfo=UTC))
    assert await harness.scheduler.tick() == 0
    harness.clock.set(datetime(2026, 1, 7, 10, 0, tzinfo=UTC))
    assert await harness.scheduler.tick() == 1
    assert await harness.scheduler.tick() == 0
    due = await harness.followups(contact_id=contact["id"], status="due")
    assert [f["step"] for f in due] == ["thank-you"]


async def test_complaint_gets_a_callback_within_24h_and_a_check_after_its_thread_resolves(harness: Harness) -> None:
    harness.clock.set(MONDAY_10)
    contact = await harness.contact(preferred_channel="email")
    await harness.touch(
        contact["id"], type="complaint", direction="inbound", channel="phone", agent="alan", thread_id="T-1"
    )
    found = await harness.wait_for(1, contact_id=contact["id"], policy="complaint-callback")
    callback = found[0]
    assert callback["policy"] == "complaint-callback" and callback["step"] == "call-back"
    assert callback["priority"] == "high" and callback["channel"] == "phone" and callback["assignee"] == "alan"
    assert at(callback, "due_at") == MONDAY_10 + timedelta(hours=24)

    # The agent calls back on the thread: the loop closes by itself.
    harness.clock.advance(hours=3)
    reply = await harness.touch(contact["id"], type="support", direction="outbound", channel="phone", thread_id="T-1")
    await harness.applied(reply.id)
    done = await harness.client.get(f"/v1/followups/{callback['id']}")
    assert done.json()["status"] == "completed" and done.json()["interaction_id"] == reply.data["id"]

    resolved_at = MONDAY_10 + timedelta(days=1)
    harness.clock.set(resolved_at)
    event = resolved_event(contact["id"], thread_id="T-1", at=resolved_at)
    await harness.publish(event, f"crm.interactions.thread_resolved.{contact['id']}")
    checks = await harness.wait_for(1, contact_id=contact["id"], policy="complaint-callback", status="scheduled")
    assert checks[0]["step"] == "satisfaction-check"
    assert at(checks[0], "due_at") == resolved_at + timedelta(days=2)


async def test_low_score_is_recovered_within_4_business_hours_and_escalated_when_overdue(harness: Harness) -> None:
    # Friday 15:00 in New York: 2 business hours left that day, 2 more on Monday from 09:00.
    friday_15_ny = datetime(2026, 1, 9, 20, 0, tzinfo=UTC)
    harness.clock.set(friday_15_ny)
    contact = await harness.contact(timezone="America/New_York", preferred_channel="sms", owner="ada")
    await harness.touch(contact["id"], type="survey_response", direction="inbound", channel="self_service", csat=2)
    found = await harness.wait_for(1, contact_id=contact["id"], policy="low-score-recovery")
    recovery = found[0]
    assert recovery["priority"] == "urgent" and recovery["channel"] == "sms" and recovery["assignee"] == "ada"
    monday_11_ny = datetime(2026, 1, 12, 16, 0, tzinfo=UTC)
    assert at(recovery, "due_at") == monday_11_ny

    # An nps of 7 and a csat of 3 are not low: nothing more.
    fine = await harness.touch(contact["id"], type="survey_response", direction="internal", csat=3, nps=7)
    await harness.applied(fine.id)
    assert len(await harness.followups(contact_id=contact["id"], policy="low-score-recovery")) == 1

    tap = await harness.tap(contact["id"])
    harness.clock.set(monday_11_ny)
    assert await harness.scheduler.tick() == 1
    escalated = (await harness.client.get(f"/v1/followups/{recovery['id']}")).json()
    assert escalated["status"] == "due" and escalated["escalation_level"] == 1
    assert escalated["team"] == "team-leads" and escalated["assignee"] is None
    got = await tap.take(4)
    await tap.assert_no_more()
    assert [e.type for e in got] == [
        "crm.followup.scheduled.v1", "crm.followup.due.v1", "crm.followup.overdue.v1", "crm.followup.escalated.v1",
    ]  # fmt: skip
    assert all(e.data["id"] == recovery["id"] and e.subject == contact["id"] for e in got)
    overdue = await harness.followups(overdue="true", team="team-leads")
    assert [f["id"] for f in overdue] == [recovery["id"]]


async def test_an_answered_inbound_cancels_its_sla_followup(harness: Harness) -> None:
    harness.clock.set(MONDAY_10)
    contact = await harness.contact()
    await harness.touch(contact["id"], type="inquiry", direction="inbound", channel="live_chat", thread_id="chat-9")
    sla = (await harness.wait_for(1, contact_id=contact["id"], policy="response-sla"))[0]
    assert at(sla, "due_at") == MONDAY_10 + timedelta(minutes=5) and sla["channel"] == "live_chat"
    await harness.touch(contact["id"], type="inquiry", direction="inbound", channel="email")
    both = await harness.wait_for(2, contact_id=contact["id"], policy="response-sla")
    email_sla = next(f for f in both if f["channel"] == "email")
    assert at(email_sla, "due_at") == MONDAY_10 + timedelta(hours=24)

    harness.clock.advance(minutes=3)
    reply = await harness.touch(
        contact["id"], type="inquiry", direction="outbound", channel="live_chat", thread_id="chat-9"
    )
    await harness.applied(reply.id)
    answered = (await harness.client.get(f"/v1/followups/{sla['id']}")).json()
    assert answered["status"] == "cancelled" and answered["cancel_reason"] == "answered"
    assert answered["interaction_id"] == reply.data["id"]
    assert at(answered, "timeline_at") == MONDAY_10 + timedelta(minutes=3)
    # The email one is another channel and thread: still waiting for its reply.
    assert (await harness.client.get(f"/v1/followups/{email_sla['id']}")).json()["status"] == "scheduled"
    harness.clock.advance(minutes=10)
    assert await harness.scheduler.tick() == 0

    stats = (await harness.client.get("/v1/followups/stats")).json()
    assert stats["sla"] == {"met": 1, "missed": 0, "open": 1, "met_rate": 1.0}


async def test_premium_quiet_for_60_days_gets_one_check_in_per_silence(harness: Harness) -> None:
    harness.clock.set(MONDAY_10)
    premium = await harness.contact(tier="premium", owner="grace", preferred_channel="phone")
    standard = await harness.contact(tier="standard")
    for contact in (premium, standard):
        await harness.applied((await harness.touch(contact["id"], type="sales", direction="outbound")).id)
    harness.clock.advance(days=59)
    assert await harness.scheduler.sweep_quiet() == 0
    harness.clock.advance(days=1, minutes=1)
    assert await harness.scheduler.sweep_quiet() == 1
    assert await harness.scheduler.sweep_quiet() == 0  # the same silence never makes a second one
    found = await harness.followups(policy="premium-quiet")
    assert [(f["contact_id"], f["assignee"], f["channel"]) for f in found] == [(premium["id"], "grace", "phone")]


async def test_the_quiet_sweep_runs_on_one_replica_at_a_time(harness: Harness) -> None:
    from services.followups.scheduler import Scheduler

    harness.clock.set(MONDAY_10)
    mine = harness.scheduler
    other = Scheduler(
        sessionmaker=mine.sessionmaker, followups=mine.followups, clock=harness.clock, replica="other", lease_s=600
    )
    assert await mine.sweep_quiet() == 0  # takes the lease
    assert await other.sweep_quiet() is None  # held by the first replica: it does not sweep
    assert await other.hold_lease() is False
    harness.clock.advance(seconds=601)  # the first replica died without renewing
    assert await other.hold_lease() is True
    assert await mine.sweep_quiet() is None
    await other.release_lease()
    assert await mine.hold_lease() is True
