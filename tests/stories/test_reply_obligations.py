"""Stories of replies owed (policy ``response-sla``): each inbound message gets its answer, on its channel and
its thread; only that answer closes it."""

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
