"""Duplicate suggestions: other live customers who look like this one (same email, same phone, or the same name
at the same company), found through the contacts search so the customer page stays a few API calls."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.console.client import Gateway

# At most this many emails and phones of the customer are looked up (plus the name): a handful of calls.
DUPLICATE_PROBES = 2


def _norm(value: Any) -> str:
    return " ".join(str(value or "").lower().split())


def same_person(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Why ``b`` looks like the same customer as ``a``: a shared email, a shared phone, or the same name at the
    same company (case and spacing aside)."""
    reasons = []
    shared_emails = sorted(set(a.get("emails", [])) & set(b.get("emails", [])))
    shared_phones = sorted(set(a.get("phones", [])) & set(b.get("phones", [])))
    if shared_emails:
        reasons.append(f"same email {shared_emails[0]}")
    if shared_phones:
        reasons.append(f"same phone {shared_phones[0]}")
    name, company = _norm(a.get("name")), _norm(a.get("company"))
    if name and name == _norm(b.get("name")) and company == _norm(b.get("company")):
        reasons.append("same name and company" if company else "same name")
    return reasons


async def duplicates(api: Gateway, contact: dict[str, Any]) -> list[dict[str, Any]]:
    """Other live customers who look like this one, each with why; read through the contacts search (one call
    each for the name and the company, and a few for its first emails and phones)."""
    # The name and the company each as one probe: a duplicate typed with other spacing or case (stored as
    # another search term) is still found through the other, and compared below with both normalised.
    probes = [_norm(contact.get("name")), _norm(contact.get("company")),
              *contact.get("emails", [])[:DUPLICATE_PROBES], *contact.get("phones", [])[:DUPLICATE_PROBES]]  # fmt: skip
    probes = [p for p in dict.fromkeys(probes) if p]
    answers = await asyncio.gather(*(api.get("/contacts", q=p[:200], limit=20) for p in probes))
    found: dict[str, dict[str, Any]] = {}
    for answer in answers:
        for other in answer.body.get("items", []) if answer.ok else []:
            if other["id"] == contact["id"] or other.get("status", "active") != "active" or other["id"] in found:
                continue
            reasons = same_person(contact, other)
            if reasons:
                found[other["id"]] = {"contact": other, "reasons": reasons}
    return list(found.values())
