"""bench/e2e.py's pure parts: the keep-up decision, the rate ladder, and the follow-ups a sampled touchpoint must
bring to the timeline (the run itself is `python -m bench.e2e --quick`, like the other benchmarks: not a test)."""

from __future__ import annotations

import random

from bench.e2e import (
    CHANNELS,
    ONE_BATCH,
    Step,
    cpu_per_touchpoint,
    expected_followups,
    identity_of,
    keeps_up,
    next_rate,
    sustained_rate,
    touchpoint,
)
from bench.timeline import CpuMeter


def step(rate: float, *, kept_up: bool = True, missed: int = 0, errors: int = 0) -> Step:
    return Step(rate=rate, stored=int(rate), missed=missed, errors=errors, kept_up=kept_up)


def test_a_consumer_keeps_up_with_at_most_one_batch_pending() -> None:
    assert keeps_up({"CRM_INTERACTIONS/gateway-interactions": ONE_BATCH, "CRM_FOLLOWUPS/gateway-followups": 0})
    assert not keeps_up({"CRM_INTERACTIONS/gateway-interactions": 0, "CRM_FOLLOWUPS/gateway-followups": ONE_BATCH + 1})
    assert keeps_up({"a": 3}, batch=3) and not keeps_up({"a": 4}, batch=3)


def test_a_step_is_sustained_only_when_kept_up_with_nothing_missed_or_refused() -> None:
    assert step(100).sustained
    assert not step(100, kept_up=False).sustained
    assert not step(100, missed=1).sustained
    assert not step(100, errors=1).sustained


def test_the_ladder_climbs_until_a_step_is_not_sustained() -> None:
    rates = [100.0, 200.0, 300.0]
    assert next_rate(rates, []) == 100.0
    assert next_rate(rates, [step(100)]) == 200.0
    assert next_rate(rates, [step(100), step(200, kept_up=False)]) is None
    assert next_rate(rates, [step(100), step(200), step(300)]) is None


def test_the_sustained_rate_is_the_highest_step_below_the_first_failure() -> None:
    assert sustained_rate([step(100), step(200), step(300, missed=2)]) == step(200)
    # A step that passed after one that failed does not count: the stack did not hold the rates between.
    assert sustained_rate([step(100), step(200, kept_up=False), step(300)]) == step(100)
    assert sustained_rate([step(100, errors=1)]) is None
    assert sustained_rate([]) is None


def test_expected_followups_follow_the_shipped_policies() -> None:
    rng = random.Random(1)
    email = {"email": "a@example.com"}

    def on(channel: str, **fields: object) -> dict[str, object]:
        return {**touchpoint(rng, email, 1), "channel": channel, "csat": None, **fields}

    # response-sla: a reply to an inbound message, on the channels with a response time
    assert expected_followups(on("email", direction="inbound", type="inquiry")) == 1
    assert expected_followups(on("in_person", direction="inbound", type="inquiry")) == 0
    # complaint-callback's call-back beside the reply; its satisfaction check waits for the thread to resolve
    assert expected_followups(on("live_chat", direction="inbound", type="complaint")) == 2
    # purchase-2-2-2: three, whatever the direction
    assert expected_followups(on("self_service", direction="outbound", type="purchase")) == 3
    assert expected_followups(on("email", direction="inbound", type="purchase")) == 4
    # low-score-recovery
    assert expected_followups(on("phone", direction="outbound", type="survey_response", csat=1)) == 1
    assert expected_followups(on("phone", direction="outbound", type="note")) == 0


def test_senders_name_customers_three_ways_and_send_on_every_channel() -> None:
    assert {next(iter(identity_of(n))) for n in range(3)} == {"email", "phone", "external_id"}
    assert identity_of(4) == identity_of(4)
    rng = random.Random(2)
    bodies = [touchpoint(rng, identity_of(n), n) for n in range(500)]
    assert {b["channel"] for b in bodies} == set(CHANNELS)
    assert all(b["body"] for b in bodies)
    assert all(("amount" in b) == (b["type"] == "purchase") for b in bodies)


def test_cpu_per_touchpoint_counts_the_stack_not_the_load_generator() -> None:
    before = {"load_generator": 1.0, "postgres": {10: 2.0}, "gateway": 1.0, "interactions": 0.5}
    after = {"load_generator": 3.0, "postgres": {10: 2.5, 11: 0.5}, "gateway": 2.0, "interactions": 1.0}
    per = cpu_per_touchpoint(CpuMeter({}, postmaster=1), before, after, 500)
    assert per == {"gateway": 2.0, "interactions": 1.0, "postgres": 2.0, "total": 5.0,
                   "load_generator (not in total)": 4.0}  # fmt: skip
    # On SQLite there is no database server to count.
    sqlite_after = {**after, "postgres": {}}
    per = cpu_per_touchpoint(CpuMeter({}, postmaster=None), {**before, "postgres": {}}, sqlite_after, 500)
    assert "postgres" not in per and per["total"] == 3.0
