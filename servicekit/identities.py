"""A customer's identities as the contacts service holds them, defined once for the services that key on them.

An identity is a ``(kind, value)`` pair: ``("email", "ada@example.com")``, ``("phone", "+12025550100")``,
``("handle:twitter", "@ada")`` (handles compare lower-cased), ``("external:shop", "C-1042")``. The contacts service
stores them so (its ``identities`` table); the interactions service keeps a copy keyed by a keyed digest of the
same pair, so both must normalise alike: they share these functions.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

Identity = tuple[str, str]


def normalise_email(value: str) -> str:
    """The address as stored (the validator's normal form, lower-cased); ``ValueError`` if it is not one."""
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None


def international_phone(value: str) -> str | None:
    """The E.164 form of a number written with its country code (``+…``), or None when it is written without one
    (only the contacts service knows the region to read it in) or is no valid number."""
    if not value.strip().startswith("+"):
        return None
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def profile_identities(
    *,
    emails: Iterable[str] = (),
    phones: Iterable[str] = (),
    handles: Mapping[str, str] | None = None,
    external_ids: Mapping[str, str] | None = None,
) -> set[Identity]:
    """The identities of a contact's profile (its fields already normalised, as the contacts service stores and
    publishes them)."""
    found = {("email", e) for e in emails} | {("phone", p) for p in phones}
    found |= {(f"handle:{channel}", h.lower()) for channel, h in (handles or {}).items()}
    found |= {(f"external:{source}", v) for source, v in (external_ids or {}).items()}
    return found


def profile_identities_of(document: Mapping[str, Any]) -> set[Identity]:
    """The identities in a contact as events carry it (``ContactRead``); a field that is absent (an erased
    contact's redacted event) or malformed contributes none."""

    def strings(name: str) -> list[str]:
        value = document.get(name)
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    def pairs(name: str) -> dict[str, str]:
        value = document.get(name)
        if not isinstance(value, dict):
            return {}
        return {str(k): v for k, v in value.items() if isinstance(v, str)}

    return profile_identities(
        emails=strings("emails"), phones=strings("phones"), handles=pairs("handles"), external_ids=pairs("external_ids")
    )


def requested_identity(request: Mapping[str, Any]) -> Identity | None:
    """The identity a resolve request names (``{"email": …}``, ``{"phone": …}``, ``{"handle": {"channel", "value"}}``
    or ``{"external_id": {"source", "value"}}``), normalised as the contacts service would; None when only the
    contacts service can tell (a phone number without its country code) or the value is not valid (the contacts
    service gives the reason)."""
    try:
        if isinstance(request.get("email"), str):
            return "email", normalise_email(request["email"])
        if isinstance(request.get("phone"), str):
            phone = international_phone(request["phone"])
            return ("phone", phone) if phone is not None else None
        handle = request.get("handle")
        if isinstance(handle, Mapping):
            return f"handle:{handle['channel']}", str(handle["value"]).strip().lower()
        external = request.get("external_id")
        if isinstance(external, Mapping):
            return f"external:{external['source']}", str(external["value"]).strip()
    except (ValueError, KeyError):
        return None
    return None


def identity_digest(key: bytes, identity: Identity) -> bytes:
    """HMAC-SHA256 of the identity under ``key``: equal identities give equal digests, and without the key a digest
    cannot be matched against a list of guessed addresses (a plain hash of an email can)."""
    kind, value = identity
    return hmac.digest(key, f"{kind}\x00{value}".encode(), hashlib.sha256)
