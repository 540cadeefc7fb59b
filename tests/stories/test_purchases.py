"""Stories of the 2+2+2 rule (policy ``purchase-2-2-2``): one warm thank-you and one check-in of each kind however
often the customer buys, each done only inside its window (from a day before it is due) by work on that purchase."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.stories.conftest import World, at, now

pytestmark = [pytest.mark.stack]

OPEN = ("scheduled", "due")


async def test_three_purchases_in_a_week_leave_one_thank_you_open(world: World) -> None:
    """Policy: purchase-2-2-2 (thank-you: repeat covered; check-ins: repeat reanchor).

    Given a customer who bought in our shop on Monday, Wednesday and Saturday,
    when the agents look at the queue,
    then there is one thank-you for them (the first purchase's, covering the two others),
    one two-week check-in and one two-month check-in, both counted from the last purchase,
    each recording the purchases it stands for."""
    ada = await world.customer(preferred_channel="email")
    days = [now() - timedelta(days=5), now() - timedelta(days=3), now() - timedelta(hours=1)]
    bought = [await world.log(ada, channel="in_person", direction="inbound", type="purchase", amount=40 + n,
                              currency="EUR", when=day) for n, day in enumerate(days)]  # fmt: skip

    def settled(found: list[dict]) -> bool:  # type: ignore[type-arg]
        return len(found) == 3 and all(len(f["triggers"]) == 2 for f in found)

    made = {f["step"]: f for f in await world.until(ada, settled, policy="purchase-2-2-2")}
    assert sorted(made) == ["check-in-2-months", "check-in-2-weeks", "thank-you"]
    assert all(f["status"] in OPEN for f in made.values())
    thanks = made["thank-you"]
    assert thanks["trigger_interaction_id"] == bought[0]["id"]
    assert [(t["interaction_id"], t["handled"]) for t in thanks["triggers"]] == [
        (bought[1]["id"], "covered"), (bought[2]["id"], "covered")
    ]  # fmt: skip
    two_weeks = made["check-in-2-weeks"]
    assert [t["handled"] for t in two_weeks["triggers"]] == ["reanchored", "reanchored"]
    assert at(two_weeks["due_at"]) >= days[2] + timedelta(weeks=2)


async def test_a_check_in_inside_its_window_is_done_by_a_call_on_its_thread(world: World) -> None:
    """Policy: purchase-2-2-2 (check-in-2-weeks, closes from one day before it is due).

    Given a customer who bought a washing machine almost two weeks ago (order thread order-88),
    when an agent calls them on the order's thread, a few hours before the two-week check-in is due,
    then that check-in is done by the call ("outbound on its thread"),
    and the two-month check-in is still ahead: it is not its time yet."""
    ada = await world.customer(preferred_channel="phone")
    await world.log(ada, channel="in_person", direction="inbound", type="purchase", thread_id="order-88",
                    amount=499, currency="EUR", when=now() - timedelta(days=13, hours=12))  # fmt: skip
    check = await world.one(ada, policy="purchase-2-2-2", step="check-in-2-weeks")
    await world.one(ada, policy="purchase-2-2-2", step="check-in-2-months")
    call = await world.log(ada, channel="phone", direction="outbound", type="support", thread_id="order-88",
                           when=now() + timedelta(hours=2))  # fmt: skip
    done = await world.changed(check)
    assert (done["status"], done["interaction_id"], done["close_reason"]) == ("completed", call["id"],
                                                                              "outbound_on_its_thread")  # fmt: skip
    later = await world.one(ada, policy="purchase-2-2-2", step="check-in-2-months")
    assert later["status"] == "scheduled"


async def test_a_support_call_in_the_purchase_week_is_not_the_thank_you(world: World) -> None:
    """Policy: purchase-2-2-2 (thank-you, closes from one day before it is due).

    Given a customer who bought this morning, with a thank-you due in two days,
    when an agent phones them an hour later about their delivery slot,
    then the thank-you is still owed: that call was not it."""
    ada = await world.customer(preferred_channel="phone")
    await world.log(ada, channel="in_person", direction="inbound", type="purchase", amount=80, currency="EUR",
                    when=now() - timedelta(hours=2))  # fmt: skip
    thanks = await world.one(ada, policy="purchase-2-2-2", step="thank-you")
    await world.log(ada, channel="phone", direction="outbound", type="support", when=now() + timedelta(hours=1))
    await world.barrier(ada)
    assert (await world.current(thanks))["status"] == "scheduled"


async def test_a_thank_you_inside_its_window_is_done_by_an_email_on_its_channel(world: World) -> None:
    """Policy: purchase-2-2-2 (thank-you, closes from one day before it is due).

    Given a customer who bought the day before yesterday and prefers email, with a thank-you due today,
    when the agent emails them a thank-you note (no thread),
    then the thank-you is done by that email ("outbound on its channel")."""
    ada = await world.customer(preferred_channel="email")
    await world.log(ada, channel="in_person", direction="inbound", type="purchase", amount=80, currency="EUR",
                    when=now() - timedelta(days=1, hours=12))  # fmt: skip
    thanks = await world.one(ada, policy="purchase-2-2-2", step="thank-you")
    assert thanks["channel"] == "email"
    note = await world.log(ada, channel="email", direction="outbound", type="sales", when=now() + timedelta(hours=2))
    done = await world.changed(thanks)
    assert (done["status"], done["interaction_id"], done["close_reason"]) == ("completed", note["id"],
                                                                              "outbound_on_its_channel")  # fmt: skip


async def test_an_email_about_a_complaint_is_not_the_thank_you(world: World) -> None:
    """Policy: purchase-2-2-2 (thank-you) beside complaint-callback.

    Given a customer with a thank-you due today for a purchase, who also has a complaint open on thread rma-5,
    when the agent emails them on the complaint's thread,
    then the thank-you is still owed: an answer about a complaint is not a thank-you."""
    ada = await world.customer(preferred_channel="email")
    await world.log(ada, channel="in_person", direction="inbound", type="purchase", amount=80, currency="EUR",
                    when=now() - timedelta(days=1, hours=12))  # fmt: skip
    thanks = await world.one(ada, policy="purchase-2-2-2", step="thank-you")
    await world.log(ada, channel="email", direction="inbound", type="complaint", thread_id="rma-5")
    await world.one(ada, policy="complaint-callback")
    await world.log(ada, channel="email", direction="outbound", type="support", thread_id="rma-5",
                    when=now() + timedelta(hours=2))  # fmt: skip
    await world.one(ada, policy="complaint-callback", status="completed")
    assert (await world.current(thanks))["status"] == "scheduled"


async def test_a_purchase_thank_you_goes_to_the_next_consented_channel(world: World) -> None:
    """Policy: purchase-2-2-2 (channel: preferred, then email, phone, SMS).

    Given a customer who prefers email but withdrew their email consent,
    when they buy in the shop,
    then the thank-you and the check-ins are planned by phone, the next channel they accept."""
    ada = await world.customer(preferred_channel="email", consent={"email": False})
    await world.log(ada, channel="in_person", direction="inbound", type="purchase", amount=15, currency="EUR")
    made = await world.exactly(ada, 3, policy="purchase-2-2-2")
    assert {f["channel"] for f in made} == {"phone"}


async def test_a_purchase_by_a_customer_refusing_all_outreach_is_skipped_with_the_reason(world: World) -> None:
    """Policy: purchase-2-2-2.

    Given a customer who refuses email, phone and SMS,
    when they buy in the shop,
    then no thank-you or check-in is planned for them, and each shows as skipped: "opted out"."""
    ada = await world.customer(consent={"email": False, "phone": False, "sms": False})
    await world.log(ada, channel="in_person", direction="inbound", type="purchase", amount=15, currency="EUR")
    made = await world.exactly(ada, 3, policy="purchase-2-2-2")
    assert {(f["status"], f["skip_reason"]) for f in made} == {("skipped", "opted_out")}
