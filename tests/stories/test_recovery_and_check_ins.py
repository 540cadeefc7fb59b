"""Stories of low scores (policy ``low-score-recovery``), premium customers gone quiet (``premium-quiet``), and what
the agent sees on the customer's timeline when work closed a follow-up."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tests.stories.conftest import SLOW, World, at, now

pytestmark = [pytest.mark.stack]


async def test_two_low_scores_in_a_row_make_one_recovery(world: World) -> None:
    """Policy: low-score-recovery (repeat: covered).

    Given a customer who gave us 1 out of 5 in a survey,
    when they also give an NPS of 3 the same afternoon,
    then one personal recovery is owed, recording the second score as covered: one person calls, once."""
    ada = await world.customer()
    await world.log(ada, channel="email", direction="inbound", type="survey_response", csat=1)
    recovery = await world.one(ada, policy="low-score-recovery")
    await world.log(ada, channel="email", direction="inbound", type="survey_response", nps=3,
                    when=now() + timedelta(minutes=30))  # fmt: skip
    covered = await world.changed(recovery)
    assert [t["handled"] for t in covered["triggers"]] == ["covered"]
    assert len(await world.followups_of(ada, policy="low-score-recovery")) == 1


async def test_a_recovery_is_done_on_the_low_scores_thread_only(world: World) -> None:
    """Policy: low-score-recovery.

    Given a customer who scored a support chat 2 out of 5 (thread chat-survey-1),
    when an agent answers them on an unrelated order thread, then calls them on the survey's thread,
    then the recovery stays open after the first, and is done by the second ("outbound on its thread")."""
    ada = await world.customer(preferred_channel="phone")
    await world.log(ada, channel="live_chat", direction="inbound", type="survey_response", csat=2,
                    thread_id="chat-survey-1")  # fmt: skip
    recovery = await world.one(ada, policy="low-score-recovery")
    await world.log(ada, channel="phone", direction="outbound", type="support", thread_id="order-12",
                    when=now() + timedelta(minutes=10))  # fmt: skip
    await world.barrier(ada)
    assert (await world.current(recovery))["status"] == "scheduled"
    call = await world.log(ada, channel="phone", direction="outbound", type="support", thread_id="chat-survey-1",
                           when=now() + timedelta(minutes=20))  # fmt: skip
    done = await world.changed(recovery)
    assert (done["status"], done["interaction_id"], done["close_reason"]) == ("completed", call["id"],
                                                                              "outbound_on_its_thread")  # fmt: skip


async def test_a_premium_customer_gone_quiet_gets_one_check_in_done_inside_its_window(world: World) -> None:
    """Policy: premium-quiet (closes from one day before it is due; repeat: covered).

    Given a premium customer whose last touchpoint was 61 days ago,
    when the quiet sweep runs (again and again),
    then one proactive check-in is owed to them on their preferred channel, not one per sweep;
    and the account manager's call a little before it is due does it ("outbound on its channel")."""
    ada = await world.customer(tier="premium", preferred_channel="phone")
    await world.log(ada, channel="in_person", direction="inbound", type="note", when=now() - timedelta(days=61))
    check_in = await world.one(ada, policy="premium-quiet")
    assert (check_in["status"], check_in["channel"]) == ("scheduled", "phone")
    await asyncio.sleep(2.5)  # the sweep runs every second here: two more sweeps, no second check-in
    assert len(await world.followups_of(ada, policy="premium-quiet")) == 1
    call = await world.log(ada, channel="phone", direction="outbound", type="sales",
                           when=at(check_in["due_at"]) - timedelta(hours=23))  # fmt: skip
    done = await world.changed(check_in)
    assert (done["status"], done["interaction_id"], done["close_reason"]) == ("completed", call["id"],
                                                                              "outbound_on_its_channel")  # fmt: skip


async def test_the_timeline_shows_what_closed_a_followup(world: World) -> None:
    """Policy: response-sla.

    Given a customer who emailed us and was answered on the same thread,
    when the agent opens the customer's timeline in the console,
    then the answered reply SLA shows which touchpoint closed it and why ("outbound on its thread")."""
    ada = await world.customer()
    await world.log(ada, channel="email", direction="inbound", type="inquiry", thread_id="mail-tl-1")
    await world.one(ada, policy="response-sla")
    answer = await world.log(ada, channel="email", direction="outbound", type="support", thread_id="mail-tl-1",
                             when=now() + timedelta(minutes=5))  # fmt: skip
    answered = await world.one(ada, policy="response-sla", status="cancelled")
    deadline = asyncio.get_running_loop().time() + SLOW
    while True:
        page = await world.gateway.get(f"/api/v1/contacts/{ada['id']}/timeline", params={"kinds": "followup"})
        items = page.json().get("items", []) if page.status_code == 200 else []
        shown = [i for i in items if i["id"] == answered["id"] and i.get("status") == "cancelled"]
        if shown:
            break
        assert asyncio.get_running_loop().time() < deadline, page.text
        await asyncio.sleep(0.2)
    assert (shown[0]["close_reason"], shown[0]["interaction_id"]) == ("outbound_on_its_thread", answer["id"])
