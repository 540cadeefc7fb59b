"""The demo data set behind `make demo`: a few hundred customers of a home-appliance retailer over all seven
channels, with purchases, complaints and their threads, CSAT and NPS scores, loaded through the gateway's
real API with the admin key.

``build_demo`` is pure and deterministic: the same seed and the same ``now`` give the same customers and
touchpoints. ``load_demo`` sends them; it may run again on the same stack (contacts are resolved by email,
touchpoints carry ``source``/``external_id``), so nothing is doubled.

The shop's staff are real staff users in the teams the policies give work to (``STAFF``), so every owner and
assignee the demo makes is someone who can sign in. Once the policies have made their follow-ups, ``work_queue``
plays the agents' side of the history: each follow-up that fell due is done by a touchpoint naming it
(``followup_id``), most before their due time, some late, and a handful per person are left overdue.
"""

from __future__ import annotations

import random
import secrets
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import phonenumbers

CHANNEL_WEIGHTS = {
    "email": 26,
    "phone": 20,
    "live_chat": 18,
    "self_service": 12,
    "sms": 9,
    "social": 8,
    "in_person": 7,
}
FIRST = [
    "Astrid",
    "Jonas",
    "Mei",
    "Tomás",
    "Priya",
    "Lukas",
    "Amara",
    "Henrik",
    "Sofia",
    "Kenji",
    "Fatima",
    "Oliver",
    "Ingrid",
    "Mateo",
    "Chloé",
    "Arjun",
    "Nora",
    "Emil",
    "Zara",
    "Pieter",
    "Leila",
    "Marek",
    "Aiko",
    "Camille",
    "Diego",
    "Freya",
    "Hamza",
    "Elena",
    "Rafael",
    "Saoirse",
    "Yusuf",
    "Greta",
    "Hana",
    "Olu",
    "Maja",
    "Bruno",
]
LAST = [
    "Lindqvist",
    "Okafor",
    "Nakamura",
    "Fernández",
    "Iyer",
    "Becker",
    "Mensah",
    "Johansson",
    "Rossi",
    "Tanaka",
    "Haddad",
    "Bennett",
    "Nilsson",
    "García",
    "Dubois",
    "Sharma",
    "Berg",
    "Kowalski",
    "O'Brien",
    "van Dijk",
    "Moreau",
    "Novak",
    "Sato",
    "Laurent",
    "Silva",
    "Eriksen",
    "Khan",
    "Petrova",
    "Costa",
    "Murphy",
]
COMPANIES = [
    None,
    None,
    None,
    "Nordhavn Cafés",
    "Bright Lane Dental",
    "Kestrel Logistics",
    "Maple & Rye Bakery",
    "Oakridge Hotels",
    "Studio Lumen",
    "Harbour Physio",
    "Greenleaf Offices",
    "Atlas Coworking",
]
PRODUCTS = [
    ("espresso machine", 649.0),
    ("dishwasher", 899.0),
    ("washing machine", 749.0),
    ("cordless vacuum", 329.0),
    ("fridge-freezer", 1199.0),
    ("induction hob", 579.0),
    ("air purifier", 249.0),
    ("kettle", 59.0),
    ("coffee grinder", 139.0),
    ("tumble dryer", 699.0),
]
DEMO_AGENT_EMAIL = "demo.agent@touchpoint.example"
DEMO_AGENT = "demo.agent"  # the demo agent's handle: what their follow-ups name
TAGS = ["b2b", "newsletter", "vip", "kitchen", "laundry", "trade-in"]
# The teams the shop and its policies name (policies/*.yaml: assign.team and escalation teams), with their day.
TEAMS = {
    "support": "Support", "sales": "Sales", "returns": "Returns", "customer-success": "Customer success",
    "account-management": "Account management", "support-leads": "Support leads", "team-leads": "Team leads",
    "account-management-leads": "Account management leads",
}  # fmt: skip
# handle -> (display name, teams: the first is their home team)
STAFF = {
    "maria.berg": ("Maria Berg", ["support", "returns"]),
    "sam.okoye": ("Sam Okoye", ["support"]),
    "li.wang": ("Li Wang", ["sales", "customer-success"]),
    "jorge.diaz": ("Jorge Díaz", ["account-management", "customer-success"]),
    "anna.kask": ("Anna Kask", ["support-leads", "team-leads", "support"]),
    "noah.lind": ("Noah Lind", ["account-management-leads", "account-management"]),
    "priya.nair": ("Priya Nair", ["support", "returns"]),
    "tomas.novak": ("Tomás Novák", ["sales", "customer-success"]),
    "emma.virtanen": ("Emma Virtanen", ["customer-success"]),
    "omar.haddad": ("Omar Haddad", ["support"]),
    "julia.rossi": ("Julia Rossi", ["account-management", "customer-success"]),
}
# Who takes calls and chats and owns accounts: ten people, so that each one's queue fits on a screen.
AGENTS = ["maria.berg", "sam.okoye", "li.wang", "jorge.diaz", "anna.kask", "priya.nair", "tomas.novak",
          "emma.virtanen", "omar.haddad", "julia.rossi"]  # fmt: skip
DEMO_TIMEZONE = "Europe/Stockholm"
# Of the follow-ups that fell due, what the agents did: left this many overdue per person (and per team queue),
# and of the rest, this share late (the others before their due time).
LEFT_OVERDUE = 3
LATE_SHARE = 0.15
LANGUAGES = [
    ("en", "Europe/London"),
    ("sv", "Europe/Stockholm"),
    ("de", "Europe/Berlin"),
    ("fr", "Europe/Paris"),
    ("es", "Europe/Madrid"),
    ("en", "America/New_York"),
]
# Country code, then the number without it: the US fictional range (555-01xx),
# otherwise well-formed mobile numbers that no real person was given on purpose.
PHONE_FORMS = {
    "en": "+44 7911 {d3}{d3}",
    "sv": "+46 70 12{d3} {d2}",
    "de": "+49 151 2{d3} {d2}{d2}",
    "fr": "+33 6 12 {d2} {d2} {d2}",
    "es": "+34 612 {d3} {d3}",
    "us": "+1 202 555 01{d2}",
}

INQUIRIES = [
    ("Delivery window for my {p}", "Hi, could you tell me when the {p} will be delivered? I need to be home."),
    ("Does the {p} come with installation?", "Thinking about the {p}; is installation included in the price?"),
    ("Warranty question", "How long is the warranty on the {p} and does it cover parts and labour?"),
    ("Stock check: {p}", "Is the {p} in stock in the city store this week?"),
]
COMPLAINTS = [
    (
        "{p} arrived damaged",
        "The {p} arrived with a dented door and a cracked panel. Very disappointed, this is "
        "not acceptable after waiting two weeks.",
    ),
    (
        "Missed delivery again",
        "Nobody turned up for the {p} delivery for the second time. I took a day off work "
        "for nothing. Terrible service.",
    ),
    (
        "{p} stopped working",
        "My {p} stopped working after three weeks. It makes a loud noise and then shuts off. I want a replacement.",
    ),
    ("Charged twice", "I was charged twice for the {p}. Please refund the duplicate payment, this is frustrating."),
]
REPLIES = [
    "So sorry about this. I've booked a technician and a replacement part; you'll get a confirmation by {c}.",
    "Apologies for the trouble. The duplicate charge is refunded today and a voucher is on its way.",
    "Thank you for your patience. A new unit ships tomorrow and the courier will collect the old one.",
]
PRAISE = [
    "Great service, the {p} works perfectly and the delivery team was friendly and careful.",
    "Really happy with the {p}. Installation was quick and tidy. Thanks!",
    "Lovely experience in store, the staff helped me choose the right {p}.",
]
SELF_SERVICE = [
    "Tracked order in the app",
    "Downloaded the {p} manual",
    "Booked a delivery slot online",
    "Started a return in the help centre",
]


@dataclass
class DemoContact:
    key: str
    fields: dict[str, Any]
    touchpoints: list[dict[str, Any]] = field(default_factory=list)
    resolve_threads: list[str] = field(default_factory=list)


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _slug(text: str) -> str:
    return "".join(ch for ch in text.lower().replace(" ", "-") if ch.isalnum() or ch == "-").strip("-")


def _ascii(text: str) -> str:
    """An email-safe form of a name (Fernández -> fernandez, O'Brien -> obrien)."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in plain.lower() if ch.isalnum())


def build_demo(*, seed: int = 2026, customers: int = 300, now: datetime) -> list[DemoContact]:
    """The demo customers and their touchpoints, the same for the same ``seed`` and ``now``."""
    rng = random.Random(seed)
    now = now.astimezone(UTC).replace(microsecond=0)
    contacts: list[DemoContact] = []
    phones_taken: set[str] = set()
    for n in range(customers):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        company = rng.choice(COMPANIES)
        language, timezone = rng.choice(LANGUAGES)
        domain = (_slug(company) + ".example") if company else rng.choice(["mail.example", "post.example"])
        email = f"{_ascii(first)}.{_ascii(last)}.{n}@{domain}"
        form = PHONE_FORMS["us" if timezone == "America/New_York" else language]
        phone = form.replace("{d3}", f"{rng.randint(0, 999):03d}", 1).replace("{d3}", f"{rng.randint(0, 999):03d}")
        while "{d2}" in phone:
            phone = phone.replace("{d2}", f"{rng.randint(10, 99)}", 1)
        # Kept only when well-formed for its country: the contacts service refuses other numbers.
        # and an identity belongs to one contact, so a number drawn twice goes to the first only.
        keep = rng.random() < 0.8 and phonenumbers.is_valid_number(phonenumbers.parse(phone))
        keep = keep and phone not in phones_taken
        phones_taken.add(phone)
        phone_or_none = phone if keep else None
        premium = rng.random() < 0.18
        preferred = _weighted(rng, CHANNEL_WEIGHTS)
        fields: dict[str, Any] = {
            "name": f"{first} {last}",
            "company": company,
            "emails": [email],
            "phones": [phone_or_none] if phone_or_none else [],
            "tier": "premium" if premium else "standard",
            "preferred_channel": preferred,
            "language": language,
            "timezone": timezone,
            "tags": sorted(rng.sample(TAGS, rng.randint(0, 2))),
            "consent": {"email": rng.random() < 0.8, "sms": rng.random() < 0.5, "phone": True},
            # Premium customers have an account owner; the others are served by whoever answers.
            "owner": rng.choice(AGENTS) if premium else None,
            "stage": "lead",
        }
        contact = DemoContact(key=f"c{n}", fields=fields)
        _story(rng, contact, now=now, seed=seed, premium=premium)
        purchases = sum(1 for t in contact.touchpoints if t["type"] == "purchase")
        complaints = sum(1 for t in contact.touchpoints if t["type"] == "complaint")
        quiet = not any(now - _at(t) < timedelta(days=60) for t in contact.touchpoints)
        if purchases >= 2:
            fields["stage"] = "at_risk" if quiet or complaints >= 2 else "repeat"
        elif purchases == 1:
            fields["stage"] = "at_risk" if complaints else "customer"
        elif contact.touchpoints:
            fields["stage"] = "prospect"
        contacts.append(contact)
    return contacts


def _at(touchpoint: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(touchpoint["occurred_at"])


def _story(rng: random.Random, contact: DemoContact, *, now: datetime, seed: int, premium: bool) -> None:
    """What happened between this customer and the shop over the last six months."""
    product, price = rng.choice(PRODUCTS)
    start = now - timedelta(days=rng.randint(5, 180), hours=rng.randint(0, 23), minutes=rng.randint(0, 59))
    count = 0

    def add(at: datetime, **item: Any) -> dict[str, Any]:
        nonlocal count
        count += 1
        touchpoint = {
            "occurred_at": min(at, now - timedelta(minutes=1)).isoformat(),
            "source": "demo",
            "external_id": f"demo-{seed}-{contact.key}-{count}",
            **item,
        }
        contact.touchpoints.append(touchpoint)
        return touchpoint

    at = start
    channel = _weighted(rng, CHANNEL_WEIGHTS)
    subject, body = rng.choice(INQUIRIES)
    thread = f"demo-{seed}-{contact.key}-inq"
    add(
        at,
        channel=channel,
        direction="inbound",
        type="inquiry",
        subject=subject.format(p=product),
        body=body.format(p=product),
        thread_id=thread,
    )
    if rng.random() < 0.85:
        reply_after = (
            timedelta(minutes=rng.randint(2, 30))
            if channel in ("live_chat", "phone")
            else timedelta(hours=rng.randint(1, 30))
        )
        at += reply_after
        add(
            at,
            channel=channel,
            direction="outbound",
            type="sales",
            agent=rng.choice(AGENTS),
            team="sales",
            subject=f"Re: {subject.format(p=product)}",
            body=f"Happy to help with the {product}.",
            thread_id=thread,
        )
    purchases = rng.choices([0, 1, 2, 3], weights=[25, 45, 20, 10])[0]
    for _ in range(purchases):
        at += timedelta(days=rng.randint(1, 40), hours=rng.randint(0, 8))
        if at >= now:
            break
        buy_channel = rng.choice(["in_person", "self_service", "phone", "email"])
        add(
            at,
            channel=buy_channel,
            direction="inbound",
            type="purchase",
            subject=f"Bought a {product}",
            amount=round(price * rng.uniform(0.9, 1.1) * (3 if premium else 1), 2),
            currency="EUR",
            agent=rng.choice(AGENTS) if buy_channel == "in_person" else None,
        )
        if rng.random() < 0.5:
            add(
                at + timedelta(days=2, hours=2),
                channel="self_service",
                direction="inbound",
                type="note",
                subject=rng.choice(SELF_SERVICE).format(p=product),
            )
        roll = rng.random()
        if roll < 0.28:
            complaint_at = at + timedelta(days=rng.randint(3, 20))
            if complaint_at >= now:
                continue
            c_subject, c_body = rng.choice(COMPLAINTS)
            c_channel = rng.choice(["phone", "email", "social", "live_chat"])
            c_thread = f"demo-{seed}-{contact.key}-complaint-{count}"
            add(
                complaint_at,
                channel=c_channel,
                direction="inbound",
                type="complaint",
                subject=c_subject.format(p=product),
                body=c_body.format(p=product),
                thread_id=c_thread,
            )
            wait = timedelta(minutes=rng.randint(5, 240)) if rng.random() < 0.7 else timedelta(hours=rng.randint(8, 60))
            add(
                complaint_at + wait,
                channel=c_channel,
                direction="outbound",
                type="support",
                agent=rng.choice(AGENTS),
                team="support",
                thread_id=c_thread,
                body=rng.choice(REPLIES).format(c=c_channel.replace("_", " ")),
            )
            if complaint_at + wait + timedelta(days=2) < now and rng.random() < 0.7:
                contact.resolve_threads.append(c_thread)
                score = rng.choice([1, 2, 2, 3, 4])
                add(
                    complaint_at + wait + timedelta(days=2),
                    channel="email",
                    direction="inbound",
                    type="survey_response",
                    csat=score,
                    nps=rng.choice([2, 4, 6, 7, 8]),
                    subject="Satisfaction survey",
                    body="Thanks for sorting it out." if score >= 3 else "Still unhappy with how long this took.",
                )
        elif roll < 0.75:
            score = rng.choices([3, 4, 5], weights=[15, 40, 45])[0]
            add(
                at + timedelta(days=rng.randint(2, 9)),
                channel=rng.choice(["email", "sms", "self_service"]),
                direction="inbound",
                type="survey_response",
                csat=score,
                nps=rng.choice([7, 8, 9, 10]) if score > 3 else rng.choice([5, 6, 7]),
                subject="How did we do?",
                body=rng.choice(PRAISE).format(p=product),
            )
    if rng.random() < 0.35:
        later = now - timedelta(days=rng.randint(0, 20), hours=rng.randint(0, 20))
        if later > at:
            s_channel = rng.choice(["live_chat", "social", "sms", "phone"])
            s_thread = f"demo-{seed}-{contact.key}-support"
            add(
                later,
                channel=s_channel,
                direction="inbound",
                type="support",
                thread_id=s_thread,
                subject=f"Question about my {product}",
                body=f"How do I descale / clean the {product}?",
            )
            if rng.random() < 0.6:
                add(
                    later + timedelta(minutes=rng.randint(3, 90)),
                    channel=s_channel,
                    direction="outbound",
                    type="support",
                    agent=rng.choice(AGENTS),
                    team="support",
                    thread_id=s_thread,
                    body="Here is the step-by-step guide; let me know if anything is unclear.",
                )


def _call(http: httpx.Client, method: str, path: str, json: Any = None) -> httpx.Response:
    """One API call that waits out the gateway's rate limit (the demo is a burst of a thousand calls)."""
    for _ in range(30):
        response = http.request(method, path, json=json)
        if response.status_code not in (429, 503):
            return response
        time.sleep(min(float(response.headers.get("Retry-After", "1")), 10.0))
    return response


def load_demo(
    *,
    base_url: str,
    admin_key: str,
    seed: int = 2026,
    customers: int = 300,
    now: datetime | None = None,
    staff_password: str | None = None,
    quiet: bool = False,
) -> None:
    """Send the demo data set to a running stack through its gateway (idempotent)."""
    contacts = build_demo(seed=seed, customers=customers, now=now or datetime.now(UTC))
    say = (lambda *_: None) if quiet else print
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        password = staff_password or secrets.token_urlsafe(12)
        for team_id, team_name in TEAMS.items():
            made = _call(http, "POST", "/api/v1/teams", {"id": team_id, "name": team_name, "timezone": DEMO_TIMEZONE})
            if made.status_code not in (201, 409):
                made.raise_for_status()
        people = [("demo.admin@touchpoint.example", "admin", "Demo admin", ["support-leads"]),
                  (DEMO_AGENT_EMAIL, "agent", "Demo agent", ["support"])]  # fmt: skip
        people += [(f"{handle}@touchpoint.example", "agent", name, teams) for handle, (name, teams) in STAFF.items()]
        for email, role, name, teams in people:
            user = {"email": email, "password": password, "role": role, "name": name, "teams": teams,
                    "timezone": DEMO_TIMEZONE}  # fmt: skip
            made = _call(http, "POST", "/api/v1/users", user)
            if made.status_code == 201 and email.startswith("demo."):
                say(f"demo staff user {email} ({role}), password {password}")
            elif made.status_code not in (201, 409):
                made.raise_for_status()
        pending: list[dict[str, Any]] = []
        by_key: dict[str, str] = {}
        for contact in contacts:
            email = contact.fields["emails"][0]
            found = _call(http, "POST", "/api/v1/contacts/resolve", {"email": email, "create": contact.fields})
            found.raise_for_status()
            by_key[contact.key] = found.json()["id"]
            pending.extend({**t, "contact_id": by_key[contact.key]} for t in contact.touchpoints)
        stored = 0
        for start in range(0, len(pending), 500):
            answer = _call(http, "POST", "/api/v1/interactions/batch", {"items": pending[start : start + 500]})
            answer.raise_for_status()
            results = answer.json()["results"]
            failed = [r for r in results if r["status"] not in (200, 201)]
            if failed:
                raise RuntimeError(f"{len(failed)} demo touchpoints were refused, e.g. {failed[0]}")
            stored += len(results)
        resolved = 0
        for contact in contacts:
            for thread_id in contact.resolve_threads:
                thread = _call(http, "GET", f"/api/v1/threads/{thread_id}")
                if thread.status_code != 200 or thread.json()["status"] == "resolved":
                    continue
                last = thread.json()["items"][-1]["id"]
                _call(http, "PATCH", f"/api/v1/interactions/{last}", {"thread_status": "resolved"}).raise_for_status()
                resolved += 1
        worked = work_queue(http, seed=seed, now=datetime.now(UTC))
        handed = _hand_to_demo_agent(http)
    say(
        f"demo data: {len(contacts)} customers, {stored} touchpoints, {resolved} complaint threads resolved, "
        f"{worked['on_time']} follow-ups done on time and {worked['late']} late, {worked['left']} left overdue, "
        f"{handed} handed to {DEMO_AGENT}"
    )


def _open_followups(http: httpx.Client) -> list[dict[str, Any]]:
    """Every open follow-up, page by page (the queue has no cap on how far one pages)."""
    found: list[dict[str, Any]] = []
    for status in ("due", "scheduled"):
        cursor = None
        while True:
            params: dict[str, Any] = {"status": status, "limit": 200, "sort": "due_at"}
            if cursor:
                params["cursor"] = cursor
            page = _call(http, "GET", "/api/v1/followups?" + urlencode(params))
            if page.status_code != 200:
                return found
            found += page.json()["items"]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
    return found


def _settled(http: httpx.Client, *, wait_s: float = 60.0) -> list[dict[str, Any]]:
    """The open follow-ups once the policies stopped making new ones (the events arrive after the touchpoints)."""
    deadline = time.monotonic() + wait_s
    seen = _open_followups(http)
    while time.monotonic() < deadline:
        time.sleep(2.0)
        again = _open_followups(http)
        if len(again) == len(seen):
            return again
        seen = again
    return seen


def work_queue(http: httpx.Client, *, seed: int, now: datetime) -> dict[str, int]:
    """The agents' side of the history: each open follow-up that fell due is done by an outbound touchpoint that
    names it, a few minutes before its due time or (``LATE_SHARE``) hours to days after it; per assignee (or per
    team queue for unassigned ones) the ``LEFT_OVERDUE`` most recently due are left undone. Deterministic for a
    seed; a touchpoint's external id names its follow-up, so a second run doubles nothing."""
    rng = random.Random(seed + 1)
    fell_due = sorted(
        (f for f in _settled(http) if datetime.fromisoformat(f["due_at"]) < now), key=lambda f: (f["due_at"], f["id"])
    )
    by_owner: dict[str, list[dict[str, Any]]] = {}
    for followup in fell_due:
        by_owner.setdefault(followup["assignee"] or f"team:{followup['team']}", []).append(followup)
    work: list[dict[str, Any]] = []
    counts = {"on_time": 0, "late": 0, "left": 0}
    for owner in sorted(by_owner):
        items = by_owner[owner]
        counts["left"] += min(LEFT_OVERDUE, len(items))
        for followup in items[: max(0, len(items) - LEFT_OVERDUE)]:
            due = datetime.fromisoformat(followup["due_at"])
            late = rng.random() < LATE_SHARE
            at = due + timedelta(hours=rng.uniform(2, 48)) if late else due - timedelta(minutes=rng.uniform(1, 3.5))
            if at >= now - timedelta(minutes=1):
                at, late = due - timedelta(minutes=rng.uniform(1, 3.5)), False
            counts["late" if late else "on_time"] += 1
            team = followup["team"]
            members = sorted(h for h, (_, teams) in STAFF.items() if team in teams)
            agent = followup["assignee"] or (rng.choice(members) if members else rng.choice(AGENTS))
            work.append({
                "contact_id": followup["contact_id"], "channel": followup["channel"] or "phone",
                "direction": "outbound", "type": "support" if followup["policy"] != "purchase-2-2-2" else "sales",
                "occurred_at": at.isoformat(), "agent": agent, "team": team, "thread_id": followup["thread_id"],
                "followup_id": followup["id"], "subject": followup["reason"][:200], "source": "demo",
                "external_id": f"demo-{seed}-work-{followup['id']}",
            })  # fmt: skip
    for start in range(0, len(work), 500):
        answer = _call(http, "POST", "/api/v1/interactions/batch", {"items": work[start : start + 500]})
        answer.raise_for_status()
    return counts


def _hand_to_demo_agent(http: httpx.Client, wanted: int = 6) -> int:
    """Give the demo agent a few of the open follow-ups waiting in a team's queue (unassigned), the soonest due
    from now on first, so that whoever signs in as the demo agent finds work in "Mine" (on a second run they
    have it). Right after the agents' work lands the services are busy: an empty look is tried again."""
    for _ in range(10):
        waiting = _open_followups(http)
        if waiting:
            break
        time.sleep(1.0)
    handed = sum(1 for f in waiting if f["assignee"] == DEMO_AGENT)
    now = datetime.now(UTC)
    unassigned = [f for f in waiting if f["assignee"] is None]
    unassigned.sort(key=lambda f: (datetime.fromisoformat(f["due_at"]) < now, f["due_at"], f["id"]))
    for item in unassigned:
        if handed >= wanted:
            break
        if _call(http, "POST", f"/api/v1/followups/{item['id']}/assign", {"assignee": DEMO_AGENT}).status_code == 200:
            handed += 1
    return handed
