"""Stories of complaints (policy ``complaint-callback``): a call-back promised for each complaint, closed by work on
that complaint; a satisfaction check after its thread is resolved, done only inside its window, on that thread."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.stories.conftest import World, at, now

pytestmark = [pytest.mark.stack]


async def resolved_complaint(world: World, thread: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """A customer who phoned in a complaint on ``thread``, which an agent then resolved; their satisfaction check."""
    ada = await world.customer()
    complaint = await world.log(ada, channel="phone", direction="inbound", type="complaint", thread_id=thread)
    await world.one(ada, policy="complaint-callback", step="call-back")
    await world.resolve(complaint)
    check = await world.one(ada, policy="complaint-callback", step="satisfaction-check")
    return ada, check


async def test_a_callback_is_closed_by_a_touchpoint_naming_its_followup(world: World) -> None:
    """Policy: complaint-callback.

    Given a customer who complained by email and was promised a call-back,
    when the agent calls them from their desk phone (no thread) and logs the call in the console's API as fulfilling
    that call-back,
    then the call-back is completed by that call, with the reason "touchpoint named it";
    the reply owed to the email stays open (the call named the call-back, not the email)."""
    ada = await world.customer()
    await world.log(ada, channel="email", direction="inbound", type="complaint", thread_id="mail-complaint-1")
    callback = await world.one(ada, policy="complaint-callback", step="call-back")
    # The agent logs the call in the console's API (the public one, through the gateway).
    logged = await world.gateway.post("/api/v1/interactions", json={
        "contact_id": ada["id"], "channel": "phone", "direction": "outbound", "type": "support",
        "occurred_at": now().isoformat(), "followup_id": callback["id"], "outcome": "Apologised; refund agreed.",
    })  # fmt: skip
    assert logged.status_code == 201, logged.text
    call = logged.json()
    assert call["followup_id"] == callback["id"]
    done = await world.one(ada, policy="complaint-callback", status="completed")
    assert (done["id"], done["interaction_id"], done["close_reason"]) == (callback["id"], call["id"],
                                                                          "touchpoint_named_it")  # fmt: skip
    assert done["outcome"] == "Apologised; refund agreed."
    assert (await world.one(ada, policy="response-sla"))["status"] == "scheduled"


async def test_a_call_on_one_complaints_thread_does_not_close_another_complaints_callback(world: World) -> None:
    """Policy: complaint-callback.

    Given a customer with two complaints open, one about a late delivery, one about a wrong invoice,
    when the agent calls them back about the delivery, on its thread,
    then the delivery complaint's call-back is done, and the invoice complaint's call-back is still in the queue."""
    ada = await world.customer()
    await world.log(ada, channel="phone", direction="inbound", type="complaint", thread_id="late-delivery")
    await world.log(ada, channel="email", direction="inbound", type="complaint", thread_id="wrong-invoice")
    await world.exactly(ada, 2, policy="complaint-callback", status="scheduled")
    await world.log(ada, channel="phone", direction="outbound", type="support", thread_id="late-delivery",
                    when=now() + timedelta(hours=1))  # fmt: skip
    done = await world.one(ada, policy="complaint-callback", status="completed")
    assert (done["thread_id"], done["close_reason"]) == ("late-delivery", "outbound_on_its_thread")
    assert (await world.one(ada, policy="complaint-callback", status="scheduled"))["thread_id"] == "wrong-invoice"


async def test_a_complaint_repeated_on_its_thread_makes_one_callback(world: World) -> None:
    """Policy: complaint-callback (repeat: covered).

    Given a customer who complained by phone and was promised a call-back within a day,
    when they call again about the same complaint an hour later,
    then there is still one call-back, due when first promised, recording the second call as covered."""
    ada = await world.customer()
    await world.log(ada, channel="phone", direction="inbound", type="complaint", thread_id="broken-fridge")
    callback = await world.one(ada, policy="complaint-callback", step="call-back")
    await world.log(ada, channel="phone", direction="inbound", type="complaint", thread_id="broken-fridge",
                    when=now() + timedelta(hours=1))  # fmt: skip
    covered = await world.changed(callback)
    assert covered["due_at"] == callback["due_at"] and covered["triggers"][0]["handled"] == "covered"
    assert len(await world.followups_of(ada, policy="complaint-callback")) == 1


async def test_a_satisfaction_check_due_tuesday_is_not_done_by_a_support_call_on_monday_on_another_thread(
    world: World,
) -> None:
    """Policy: complaint-callback (step satisfaction-check).

    Given a customer whose complaint thread was resolved on Sunday, with a satisfaction check due on Tuesday,
    when an agent phones them on Monday about something else (a support question, on another thread),
    then the satisfaction check is still due on Tuesday: that call did not ask whether the complaint was settled."""
    ada, check = await resolved_complaint(world, "ux-live-1")
    # The day before it is due (the interactions service takes touchpoints up to a day ahead of its clock).
    monday = at(check["due_at"]) - timedelta(hours=25)
    await world.log(ada, channel="phone", direction="outbound", type="support", thread_id="support-question",
                    when=monday)  # fmt: skip
    await world.barrier(ada)
    assert (await world.current(check))["status"] == "scheduled"


async def test_a_call_on_the_complaint_thread_right_after_resolution_is_not_the_satisfaction_check(
    world: World,
) -> None:
    """Policy: complaint-callback (step satisfaction-check).

    Given a customer whose complaint thread was just resolved,
    when the agent calls them on that thread an hour later to confirm the fix went out,
    then the satisfaction check two days later is still owed: it is too early to know whether they are satisfied."""
    ada, check = await resolved_complaint(world, "ux-live-3")
    await world.log(ada, channel="phone", direction="outbound", type="support", thread_id="ux-live-3",
                    when=now() + timedelta(hours=1))  # fmt: skip
    await world.barrier(ada)
    assert (await world.current(check))["status"] == "scheduled"


async def test_a_thread_resolved_again_moves_its_satisfaction_check(world: World) -> None:
    """Policy: complaint-callback (step satisfaction-check, repeat: reanchor).

    Given a customer whose complaint thread was resolved, then reopened because the fix did not hold,
    when the agent resolves it again,
    then there is one satisfaction check, now due two days after the second resolution, recording both."""
    ada, check = await resolved_complaint(world, "ux-live-4")
    reopened = await world.interactions.patch(
        f"/v1/interactions/{check['trigger_interaction_id']}", json={"thread_status": "open"}
    )
    assert reopened.status_code == 200, reopened.text
    await world.resolve({"id": check["trigger_interaction_id"]})
    moved = await world.changed(check)
    assert moved["triggers"][0]["handled"] == "reanchored" and at(moved["due_at"]) > at(check["due_at"])
    assert len(await world.followups_of(ada, policy="complaint-callback", step="satisfaction-check")) == 1


async def test_a_callback_goes_to_the_next_consented_channel_and_is_skipped_only_when_none_is_left(
    world: World,
) -> None:
    """Policy: complaint-callback (channel phone, then email, then SMS).

    Given one customer who refuses phone calls, and another who refuses phone, email and SMS,
    when each complains by live chat,
    then the first one's call-back goes by email (the next channel they accept),
    and the second one's is skipped with the reason "opted out" shown, while their chat still gets its reply."""
    no_calls = await world.customer(consent={"phone": False})
    await world.log(no_calls, channel="live_chat", direction="inbound", type="complaint", thread_id="chat-x1")
    assert (await world.one(no_calls, policy="complaint-callback"))["channel"] == "email"
    nothing = await world.customer(consent={"phone": False, "email": False, "sms": False})
    await world.log(nothing, channel="live_chat", direction="inbound", type="complaint", thread_id="chat-x2")
    skipped = await world.one(nothing, policy="complaint-callback")
    assert (skipped["status"], skipped["skip_reason"]) == ("skipped", "opted_out")
    assert (await world.one(nothing, policy="response-sla"))["channel"] == "live_chat"


async def test_an_agent_completing_a_callback_in_the_queue_records_it(world: World) -> None:
    """Policy: complaint-callback.

    Given a customer promised a call-back after a complaint,
    when the agent calls from a phone we do not log and marks the call-back done in the queue, with an outcome,
    then it is completed, with the reason "completed by agent" and the agent's outcome on it."""
    ada = await world.customer()
    await world.log(ada, channel="phone", direction="inbound", type="complaint", thread_id="noisy-neighbour")
    callback = await world.one(ada, policy="complaint-callback")
    done = await world.complete(callback, "Called from my mobile; all settled.")
    assert (done["status"], done["close_reason"], done["outcome"]) == (
        "completed", "completed_by_agent", "Called from my mobile; all settled."
    )  # fmt: skip
