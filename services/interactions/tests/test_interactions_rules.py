"""Rules that need no database: touchpoint shape, positions, sentiment, the figures of the stats."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from servicekit.cursors import InvalidCursor
from services.interactions.idempotency import InvalidIdempotencyKey, checked_key, fingerprint
from services.interactions.schemas import TouchpointCreate, TouchpointPatch
from services.interactions.service import Position, first_response_s, sentiment_of
from services.interactions.stats import first_responses, nearest_rank, pareto, retention
from services.interactions.tests.conftest import touchpoint_factory

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def test_touchpoint_shape() -> None:
    item = TouchpointCreate.model_validate(touchpoint_factory(amount="12.5", currency="usd", type="purchase"))
    assert item.currency == "USD" and item.amount == Decimal("12.5")
    for bad in (
        {"contact_id": None},
        {"amount": "-1", "currency": "EUR"},
        {"amount": "1.00001", "currency": "EUR"},
        {"currency": "EURO", "amount": 1},
        {"duration_s": -5},
        {"thread_id": "   "},
        {"thread_id": "tab\there"},
        {"occurred_at": "0001-01-01T00:00:00+14:00"},  # before year 1 in UTC
        {"occurred_at": "9999-12-31T23:59:59-12:00"},  # after year 9999 in UTC
        {"attributes": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}},
        {"external_id": "x"},
    ):
        with pytest.raises(ValidationError):
            TouchpointCreate.model_validate(touchpoint_factory(**bad))
    with pytest.raises(ValidationError):
        TouchpointPatch.model_validate({})
    with pytest.raises(ValidationError):
        TouchpointPatch.model_validate({"thread_status": None})


def test_positions_round_trip_and_reject_garbage() -> None:
    position = Position(T0, uuid.uuid4())
    assert Position.from_cursor(position.cursor()) == position
    assert Position.from_before(position.before()) == position
    assert position.before().startswith("2026-01-05T08:00:00Z|")
    # An unencoded '+' arrives as a space.
    assert Position.from_before(f"2026-01-05T09:00:00 01:00|{position.id}") == position
    for bad in ("", "nope", f"2026-01-05T08:00:00|{position.id}", "2026-01-05T08:00:00Z|not-a-uuid"):
        with pytest.raises(InvalidCursor):
            Position.from_before(bad)
    with pytest.raises(InvalidCursor):
        Position.from_cursor("!!!")


def test_sentiment_reads_subject_and_body() -> None:
    angry = sentiment_of("Broken again", "This is terrible, I am furious and want a refund.")
    happy = sentiment_of("Thanks!", "Great service, you were wonderful.")
    assert angry is not None and happy is not None and -1 <= angry < -0.5 < 0.5 < happy <= 1
    assert sentiment_of(None, "  ") is None


def test_first_response_time_of_a_thread() -> None:
    minutes = [("internal", 0), ("inbound", 1), ("inbound", 2), ("outbound", 6)]
    assert first_response_s([(d, T0 + timedelta(minutes=m)) for d, m in minutes]) == 300
    assert first_response_s([("inbound", T0)]) is None
    rows = [
        ("a", "inbound", "email", None, None, T0),
        ("a", "outbound", "email", "support", "ana", T0 + timedelta(hours=2)),
        ("a", "inbound", "email", None, None, T0 + timedelta(hours=3)),
        ("b", "outbound", "phone", "sales", "ben", T0),  # no inbound before: no response time
        ("b", "inbound", "phone", None, None, T0 + timedelta(minutes=1)),
        ("b", "outbound", "phone", "sales", "ben", T0 + timedelta(minutes=2)),
    ]
    assert first_responses(rows, None, None) == {"email": [7200.0], "phone": [60.0]}
    assert first_responses(rows, "phone", None) == {"phone": [60.0]}
    assert first_responses(rows, None, "support") == {"email": [7200.0]}
    # The agent filter, like the team's, is on who replied.
    assert first_responses(rows, None, None, "ben") == {"phone": [60.0]}
    assert first_responses(rows, None, "support", "ben") == {}


def test_percentiles_retention_and_pareto() -> None:
    assert nearest_rank([], 0.5) is None
    assert nearest_rank([5, 1, 4, 2, 3], 0.5) == 3 and nearest_rank(list(range(1, 11)), 0.9) == 9
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    figures = retention([(a, T0), (a, T0 + timedelta(days=90)), (b, T0), (b, T0 + timedelta(days=91)), (c, T0)])
    assert figures == {"purchasers": 3, "repeat_within_90_days": 1, "share": 0.3333}
    assert retention([])["share"] is None
    split = pareto([Decimal(800)] + [Decimal(25)] * 8 + [Decimal(0)])
    assert split["top_contacts"] == 2 and split["top_share"] == round(825 / 1000, 4)
    assert pareto([])["top_share"] is None


def test_idempotency_key_and_fingerprint() -> None:
    assert checked_key(None, None) == (None, "anonymous")
    assert checked_key("k", " gateway-key-1 ") == ("k", "gateway-key-1")
    for key, caller in (("", None), ("k" * 256, None), ("tab\there", None), ("k", "c" * 201)):
        with pytest.raises(InvalidIdempotencyKey):
            checked_key(key, caller)
    assert fingerprint("POST", "/v1/interactions", b'{"a": 1, "b": 2}') == fingerprint(
        "POST", "/v1/interactions", b'{"b":2,"a":1}'
    )
    assert fingerprint("POST", "/v1/interactions", b"{}") != fingerprint("POST", "/v1/interactions/batch", b"{}")


def test_touchpoints_without_attributes_each_get_their_own_empty_ones() -> None:
    first, second = (TouchpointCreate.model_validate(touchpoint_factory()) for _ in range(2))
    assert first.attributes == second.attributes == {} and first.attributes is not second.attributes
    first.attributes["x"] = 1
    assert second.attributes == {}
    # The document still states the default.
    assert TouchpointCreate.model_json_schema()["properties"]["attributes"]["default"] == {}
