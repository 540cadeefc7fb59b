"""Keyset cursors: what a service gives out reads back, and anything else is a 400 ``InvalidCursor``."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from servicekit import cursors
from servicekit.cursors import CHANGED, NOT_OURS, InvalidCursor

KEY = b"k" * 32


def as_uuid(document: Any) -> uuid.UUID:
    return uuid.UUID(document["before"])


def test_a_plain_cursor_is_unpadded_urlsafe_base64_json_and_reads_back() -> None:
    ident = uuid.uuid4()
    token = cursors.encode({"before": str(ident)})
    assert "=" not in token
    assert token == base64.urlsafe_b64encode(json.dumps({"before": str(ident)}).encode()).decode().rstrip("=")
    assert cursors.decode(token, as_uuid) == ident


@pytest.mark.parametrize(
    "token",
    [
        "!!!",
        "A" * 5,
        cursors.encode([1, 2]),
        cursors.encode({"other": 1}),
        cursors.encode({"before": 5}),  # uuid.UUID(5) raises AttributeError: it was a 500 in contacts
        cursors.encode({"before": "not-a-uuid"}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_anything_else_is_invalid_cursor_with_the_given_detail(token: str) -> None:
    with pytest.raises(InvalidCursor) as refused:
        cursors.decode(token, as_uuid, detail="Not ours (with this sort).")
    assert (refused.value.status, refused.value.slug) == (400, "invalid-cursor")
    assert refused.value.detail == "Not ours (with this sort)."


def test_a_signed_cursor_reads_back_only_under_its_key() -> None:
    token = cursors.sign({"b": 1, "a": "x"}, KEY)
    assert cursors.unsign(token, KEY) == {"a": "x", "b": 1}
    body = token.split(".")[0]
    assert base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)) == b'{"a":"x","b":1}'
    with pytest.raises(InvalidCursor) as refused:
        cursors.unsign(token, b"other" * 8)
    assert refused.value.detail == CHANGED


@pytest.mark.parametrize("token", ["", "abc", "abc.def", "!!.!!", cursors.sign({"a": 1}, KEY) + "x"])
def test_a_changed_or_made_up_signed_cursor_is_refused(token: str) -> None:
    with pytest.raises(InvalidCursor) as refused:
        cursors.unsign(token, KEY)
    assert refused.value.detail == CHANGED


def test_a_signed_cursor_holding_something_else_is_refused_and_a_readers_own_refusal_passes() -> None:
    token = cursors.sign({"before": 5}, KEY)
    with pytest.raises(InvalidCursor) as refused:
        cursors.read_signed(token, KEY, as_uuid)
    assert refused.value.detail == NOT_OURS

    def foreign(payload: dict[str, Any]) -> uuid.UUID:
        raise InvalidCursor("This cursor belongs to another timeline.")

    with pytest.raises(InvalidCursor, match="another timeline"):
        cursors.read_signed(token, KEY, foreign)
