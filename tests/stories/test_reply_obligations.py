"""Stories of replies owed (policy ``response-sla``): each message a customer sends gets its answer, on the channel
they used and on its thread, whatever their outreach consent says; only that answer closes it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.stories.conftest import World, now

pytestmark = [pytest.mark.stack]


async def test_a_reply_on_one_chat_thread_leaves_the_other_threads_sla_open(world: World) -> None:
    """Policy: response-sla.

    Given a customer chatting with us in two live chats at once (chat A about a delivery, chat B about an invoice),
    when an agent answers in chat A,
    then chat A's reply SLA is answered by that reply (the agent sees which touchpoint closed it, and why),
    and chat B's is still open in the queue: nobody answered it yet."""
    ada = await world.customer()
    await world.log(ada, channel="live_chat", direction="inbound", type="inquiry", thread_id="chat-A")
    await world.log(ada, channel="live_chat", direction="inbound", type="inquiry", thread_id="chat-B")
    await world.exactly(ada, 2, policy="response-sla", status="scheduled")
    answer = await world.log(ada, channel="live_chat", direction="outbound", type="support", thread_id="chat-A",
                             when=now() + timedelta(seconds=30))  # fmt: skip
    answered = await world.one(ada, policy="response-sla", status="cancelled")
    assert (answered["thread_id"], answered["cancel_reason"]) == ("chat-A", "answered")
    assert (answered["interaction_id"], answered["close_reason"]) == (answer["id"], "outbound_on_its_thread")
    still_open = await world.one(ada, policy="response-sla", status="scheduled")
    assert still_open["thread_id"] == "chat-B"


async def test_an_opted_out_sms_complainer_still_gets_a_reply_obligation_on_sms(world: World) -> None:
    """Policy: response-sla (and complaint-callback for the call-back).

    Given a customer who said no to marketing and outreach by SMS,
    when they text us a complaint,
    then a reply is owed to them on SMS within the SMS response time (consent governs outreach, not answers),
    and the call-back promised for the complaint goes by phone, a channel they accept."""
    ada = await world.customer(consent={"sms": False}, phones=["+33612345678"])
    complaint = await world.log(ada, channel="sms", direction="inbound", type="complaint", thread_id="sms-1")
    reply = await world.one(ada, policy="response-sla")
    assert (reply["status"], reply["channel"], reply["skip_reason"]) == ("scheduled", "sms", None)
    assert (reply["trigger_interaction_id"], reply["trigger_channel"]) == (complaint["id"], "sms")
    callback = await world.one(ada, policy="complaint-callback")
    assert (callback["status"], callback["channel"]) == ("scheduled", "phone")


async def test_a_customer_opted_out_of_everything_who_writes_in_still_gets_an_answer(world: World) -> None:
    """Policy: response-sla.

    Given a customer who withdrew every outreach consent (email, phone, SMS, chat, social),
    when they email us a question,
    then a reply by email is still owed to them and shows in the agents' queue."""
    refusals = dict.fromkeys(("email", "phone", "sms", "live_chat", "social"), False)
    ada = await world.customer(consent=refusals)
    await world.log(ada, channel="email", direction="inbound", type="inquiry")
    reply = await world.one(ada, policy="response-sla")
    assert (reply["status"], reply["channel"]) == ("scheduled", "email")


async def test_withdrawing_sms_consent_while_a_reply_is_owed_keeps_the_reply(world: World) -> None:
    """Policy: response-sla.

    Given a customer who texted us and is waiting for the answer,
    when they withdraw their SMS consent before we answer,
    then the reply they are owed stays open on SMS (they still expect the answer where they asked)."""
    ada = await world.customer()
    await world.log(ada, channel="sms", direction="inbound", type="inquiry", thread_id="sms-2")
    reply = await world.one(ada, policy="response-sla", status="scheduled")
    await world.update(ada, consent={"sms": False})
    await world.barrier(ada)
    kept = await world.current(reply)
    assert (kept["status"], kept["channel"]) == ("scheduled", "sms")


async def test_a_message_without_thread_is_answered_by_the_first_reply_on_its_channel(world: World) -> None:
    """Policy: response-sla.

    Given a customer who texted us and emailed us separately, neither on a thread,
    when an agent answers the email,
    then the email's reply SLA is answered, with the reason "outbound on its channel",
    and the text message still waits for its answer: an email does not answer an SMS."""
    ada = await world.customer()
    await world.log(ada, channel="sms", direction="inbound", type="inquiry")
    await world.log(ada, channel="email", direction="inbound", type="inquiry")
    await world.exactly(ada, 2, policy="response-sla", status="scheduled")
    await world.log(ada, channel="email", direction="outbound", type="support", when=now() + timedelta(minutes=3))
    answered = await world.one(ada, policy="response-sla", status="cancelled")
    assert (answered["channel"], answered["close_reason"]) == ("email", "outbound_on_its_channel")
    waiting = await world.one(ada, policy="response-sla", status="scheduled")
    assert waiting["channel"] == "sms"


async def test_a_second_message_before_the_answer_is_covered_by_the_first_ones_sla(world: World) -> None:
    """Policy: response-sla (repeat: covered).

    Given a customer waiting on chat for an answer,
    when they write again on the same chat before anyone answered ("hello? anyone?"),
    then there is still one reply owed on that chat, due when the first message's was (the wait counts from the
    first message), and it records the second message as covered;
    and one answer closes it."""
    ada = await world.customer()
    await world.log(ada, channel="live_chat", direction="inbound", type="inquiry", thread_id="chat-C")
    first = await world.one(ada, policy="response-sla")
    again = await world.log(ada, channel="live_chat", direction="inbound", type="inquiry", thread_id="chat-C",
                            when=now() + timedelta(minutes=1))  # fmt: skip
    covered = await world.changed(first)
    assert covered["due_at"] == first["due_at"]
    assert [(t["interaction_id"], t["handled"]) for t in covered["triggers"]] == [(again["id"], "covered")]
    assert len(await world.followups_of(ada, policy="response-sla")) == 1
    await world.log(ada, channel="live_chat", direction="outbound", type="support", thread_id="chat-C",
                    when=now() + timedelta(minutes=2))  # fmt: skip
    assert (await world.one(ada, policy="response-sla", status="cancelled"))["id"] == first["id"]


async def test_an_internal_note_or_an_earlier_message_does_not_answer_the_customer(world: World) -> None:
    """Policy: response-sla.

    Given a customer who emailed us on a thread,
    when an agent writes an internal note on that thread, and an outbound email sent before the customer wrote is
    logged late on it,
    then the customer is still owed their reply: neither one answered them."""
    ada = await world.customer()
    written = now()
    await world.log(ada, channel="email", direction="inbound", type="inquiry", thread_id="mail-7", when=written)
    owed = await world.one(ada, policy="response-sla", status="scheduled")
    await world.log(ada, channel="email", direction="internal", type="note", thread_id="mail-7")
    await world.log(ada, channel="email", direction="outbound", type="support", thread_id="mail-7",
                    when=written - timedelta(hours=1))  # fmt: skip
    await world.barrier(ada)
    assert (await world.current(owed))["status"] == "scheduled"
