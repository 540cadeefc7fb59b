"""What closes a follow-up (services/followups/closing.py) and what a new trigger repeats (no piles): the rules
alone, on rows as the shipped policies make them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from servicekit.ids import new_id
from services.followups.closing import NAMED, ON_CHANNEL, ON_THREAD, close_reason
from services.followups.policybook import shipped_policies
from services.followups.rules import ContactFacts, Decision, decide
from services.followups.service import new_followup, same_obligation

MONDAY_10 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
POLICIES = {p.id: p for p in shipped_policies()}


def made(policy: str, step: int = 0, **touch: Any) -> tuple[Decision, dict[str, Any]]:
    doc = POLICIES[policy]
    full = {"id": str(new_id()), "contact_id": str(new_id()), "channel": "live_chat", "direction": "inbound",
            "type": "inquiry", "agent": None, "team": None, "thread_id": None, "csat": None, "nps": None,
            "outcome": None, "complaint": False, **touch}  # fmt: skip
    decision = decide(policy=doc, version=1, step=doc.steps[step], touch=full, anchor_at=MONDAY_10,
                      contact=ContactFacts(), default_timezone="UTC")  # fmt: skip
    assert decision is not None
    row = new_followup(decision=decision, contact_id=uuid.UUID(full["contact_id"]), trigger_event_id=str(new_id()),
                       now=MONDAY_10)  # fmt: skip
    return decision, row


def reply(**touch: Any) -> dict[str, Any]:
    return {"id": str(new_id()), "direction": "outbound", "channel": "live_chat", "thread_id": None, **touch}


def test_a_reply_on_one_chat_thread_answers_that_thread_only() -> None:
    _, chat_a = made("response-sla", thread_id="chat-A")
    _, chat_b = made("response-sla", thread_id="chat-B")
    answer = reply(thread_id="chat-A")
    at = MONDAY_10 + timedelta(minutes=2)
    assert close_reason(chat_a, answer, at) == ON_THREAD
    assert close_reason(chat_b, answer, at) is None


def test_an_inbound_without_thread_is_answered_by_the_first_outbound_on_its_channel_after_it() -> None:
    _, sla = made("response-sla", channel="sms")
    after = MONDAY_10 + timedelta(minutes=5)
    assert close_reason(sla, reply(channel="sms"), after) == ON_CHANNEL
    assert close_reason(sla, reply(channel="email"), after) is None  # another channel
    assert close_reason(sla, reply(channel="sms", thread_id="other"), after) is None  # another thread
    assert close_reason(sla, reply(channel="sms"), MONDAY_10 - timedelta(minutes=1)) is None  # before the message
    assert close_reason(sla, {**reply(channel="sms"), "direction": "inbound"}, after) is None


def test_a_check_in_closes_only_inside_its_window_and_on_its_thread() -> None:
    _, check = made("complaint-callback", step=1, thread_id="ux-1", complaint=True, type="complaint")
    due = check["due_at"]
    assert due == MONDAY_10 + timedelta(days=2)
    assert close_reason(check, reply(thread_id="ux-1"), due - timedelta(days=1, minutes=1)) is None  # too early
    assert close_reason(check, reply(thread_id="ux-1"), due - timedelta(hours=3)) == ON_THREAD
    assert close_reason(check, reply(thread_id="support-2"), due - timedelta(hours=3)) is None  # another thread


def test_a_touchpoint_naming_a_followup_closes_it_whatever_its_thread_or_time() -> None:
    _, callback = made("complaint-callback", thread_id="ux-1", type="complaint", channel="phone")
    named = reply(channel="email", thread_id="elsewhere", followup_id=str(callback["id"]))
    assert close_reason(callback, named, MONDAY_10 - timedelta(days=1)) == NAMED
    assert close_reason(callback, reply(followup_id=str(new_id())), MONDAY_10) is None


def test_a_new_trigger_repeats_the_open_followup_of_its_policy_step_and_thread() -> None:
    first, sla = made("response-sla", thread_id="chat-A")
    again, _ = made("response-sla", thread_id="chat-A")
    other, _ = made("response-sla", thread_id="chat-B")
    assert same_obligation(sla, again) and not same_obligation(sla, other)
    # Without a thread, a reply is owed per channel: an SMS does not answer an email.
    _, sms = made("response-sla", channel="sms")
    email, _ = made("response-sla", channel="email")
    sms_again, _ = made("response-sla", channel="sms")
    assert same_obligation(sms, sms_again) and not same_obligation(sms, email)
    # Purchases (no thread, no reply owed): one per step whatever the channel.
    _, thanks = made("purchase-2-2-2", type="purchase", channel="in_person")
    online, _ = made("purchase-2-2-2", type="purchase", channel="email")
    assert same_obligation(thanks, online)
    assert first.plan["repeat"] == "covered" and online.plan["repeat"] == "covered"
    assert made("purchase-2-2-2", step=1, type="purchase")[0].plan["repeat"] == "reanchor"
