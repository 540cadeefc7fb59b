"""Keyset cursors: an opaque token holding the position a page ended at, and its 400 problem.

A cursor is JSON in unpadded URL-safe base64, so it passes through a query string as it is. ``encode``/``decode``
give a plain one (a service's own list: the position it holds is no secret); ``sign``/``unsign``/``read_signed``
one with an HMAC-SHA256 tag, for the public API, where a cursor also binds its page to a caller's filters and
must not be forged. ``decode`` and ``read_signed`` take the function that reads the position out of the JSON:
whatever it raises on a malformed document (``ValueError``, ``KeyError``, ``TypeError``, ``AttributeError``,
``OverflowError``) becomes ``InvalidCursor``, so a made-up cursor is always a 400, never a 500.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any, TypeVar

from servicekit.problems import ProblemError

T = TypeVar("T")

NOT_OURS = "The cursor is not one this API gave out."
# What a cursor whose base64, JSON or signature is wrong (rather than its content) is told.
CHANGED = "The cursor is not one this API gave out (or it was changed)."
# What reading a malformed position raises (binascii.Error, UnicodeDecodeError and JSONDecodeError are ValueErrors;
# OverflowError: a time UTC cannot hold, such as year 1 at +14:00).
_MALFORMED = (ValueError, KeyError, TypeError, AttributeError, OverflowError)
_TAG_BYTES = 16


class InvalidCursor(ProblemError):
    status, slug, title = 400, "invalid-cursor", "Invalid cursor"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(payload: Any) -> str:
    """A plain cursor holding ``payload`` (any JSON value)."""
    return _b64(json.dumps(payload).encode())


def decode(cursor: str, read: Callable[[Any], T], *, detail: str = NOT_OURS) -> T:
    """``read`` applied to the JSON a plain cursor holds; a cursor that is not base64 JSON, or whose JSON ``read``
    refuses, raises ``InvalidCursor(detail)``."""
    try:
        return read(json.loads(_unb64(cursor)))
    except _MALFORMED:
        raise InvalidCursor(detail) from None


def sign(payload: dict[str, Any], key: bytes) -> str:
    """A signed cursor: ``<base64 JSON>.<base64 first 16 bytes of its HMAC-SHA256 under key>``."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    tag = hmac.new(key, body, hashlib.sha256).digest()[:_TAG_BYTES]
    return f"{_b64(body)}.{_b64(tag)}"


def unsign(token: str, key: bytes) -> dict[str, Any]:
    """The JSON object a signed cursor holds; a token that is not one ``sign`` made with ``key`` raises
    ``InvalidCursor``."""
    try:
        body_part, tag_part = token.split(".", 1)
        body = _unb64(body_part)
        expected = hmac.new(key, body, hashlib.sha256).digest()[:_TAG_BYTES]
        if not hmac.compare_digest(expected, _unb64(tag_part)):
            raise ValueError("bad signature")
        payload = json.loads(body)
        if not isinstance(payload, dict):
            raise ValueError("not an object")
        return payload
    except ValueError:
        raise InvalidCursor(CHANGED) from None


def read_signed(token: str, key: bytes, read: Callable[[dict[str, Any]], T], *, detail: str = NOT_OURS) -> T:
    """``read`` applied to a signed cursor's object; what ``read`` refuses raises ``InvalidCursor(detail)`` (an
    ``InvalidCursor`` that ``read`` raises itself passes through with its own detail)."""
    payload = unsign(token, key)
    try:
        return read(payload)
    except _MALFORMED:
        raise InvalidCursor(detail) from None
