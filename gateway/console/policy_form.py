"""The policy editor's form: the fields every policy has (name, trigger, steps with their delay, channel,
assignment, priority, repeat) as controls, and the rest of the document as JSON beside them.

A stored policy is split into the two (``split``); a posted form is put back together into one document
(``merge``) for the API to check; the API's refusal is mapped back onto the control or the JSON path it names
(``errors_by_field``). Pure functions, no HTTP: tested in gateway/tests/test_console_policy_form.py."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.console import labels

TRIGGER_EVENTS = {
    "interaction.logged": "A touchpoint is logged",
    "thread.resolved": "A thread is resolved",
    "contact.quiet": "A customer goes quiet",
}
PRIORITIES = ("low", "normal", "high", "urgent")
REPEATS = {
    "covered": "Covered: the open one stands, the new trigger is recorded on it",
    "reanchor": "Re-anchor: the open one's due time counts from the new trigger",
    "stack": "Stack: one more follow-up",
}
CHANNEL_USES = {"preferred": "The customer's preferred channel", "touchpoint": "The touchpoint's own channel"}
STEP_FIELDS = ("id", "reason", "offset", "priority", "repeat")
# ``quiet_hours: null`` means "no quiet hours" (absent means the default 21:00-08:00): the one null that says
# something. Every other null in a stored policy is "not set" and only noise in the JSON view.
MEANINGFUL_NULLS = frozenset({"quiet_hours"})
PREVIEW_DAYS = (7, 30, 90)


def without_nulls(node: Any, *, top: bool = True) -> Any:
    if isinstance(node, dict):
        return {
            k: without_nulls(v, top=False) for k, v in node.items() if v is not None or (top and k in MEANINGFUL_NULLS)
        }
    if isinstance(node, list):
        return [without_nulls(v, top=False) for v in node]
    return node


@dataclass
class PolicyForm:
    """What the editor's controls hold: single values, the ticked boxes, one row per step, and the JSON rest."""

    values: dict[str, str] = field(default_factory=dict)
    ticked: dict[str, list[str]] = field(default_factory=dict)
    steps: list[dict[str, str]] = field(default_factory=list)
    rest: str = "{}"


def _pop_path(node: dict[str, Any], *path: str) -> Any:
    """Removes ``node[path[0]]...[path[-1]]`` and returns it, dropping dictionaries it leaves empty."""
    head, *tail = path
    if head not in node:
        return None
    if not tail:
        return node.pop(head)
    child = node[head]
    if not isinstance(child, dict):
        return None
    found = _pop_path(child, *tail)
    if not child:
        node.pop(head)
    return found


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _listed(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def split(document: dict[str, Any]) -> PolicyForm:
    """The controls' values and the JSON of everything else (nulls left out)."""
    rest = copy.deepcopy(without_nulls(document))
    for owned in ("id", "enabled"):
        rest.pop(owned, None)
    values = {
        "id": _text(document.get("id")),
        "name": _text(_pop_path(rest, "name")),
        "description": _text(_pop_path(rest, "description")),
        "trigger_event": _text(_pop_path(rest, "trigger", "event")) or "interaction.logged",
        "quiet_for": _text(_pop_path(rest, "trigger", "quiet_for")),
        "priority": _text(_pop_path(rest, "priority")) or "normal",
        "repeat": _text(_pop_path(rest, "repeat")) or "covered",
        "channel_use": _text(_pop_path(rest, "channel", "use")) or "preferred",
        "channel_fallback": ", ".join(_listed(_pop_path(rest, "channel", "fallback"))),
        "assign_order": ", ".join(_listed(_pop_path(rest, "assign", "order"))),
        "assign_team": _text(_pop_path(rest, "assign", "team")),
        "overdue_after": _text(_pop_path(rest, "escalation", "overdue_after")),
    }
    ticked = {
        "trigger_type": _listed(_pop_path(rest, "trigger", "all", "type")),
        "trigger_channel": _listed(_pop_path(rest, "trigger", "all", "channel")),
        "trigger_direction": _listed(_pop_path(rest, "trigger", "all", "direction")),
    }
    steps: list[dict[str, str]] = []
    extras: list[dict[str, Any]] = []
    for step in rest.pop("steps", None) or []:
        step = dict(step) if isinstance(step, dict) else {}
        steps.append({name: _text(step.pop(name, None)) for name in STEP_FIELDS})
        extras.append(step)
    if any(extras):  # aligned with the rows: the n-th holds what the n-th step has beyond the row's fields
        rest["steps"] = extras
    return PolicyForm(values=values, ticked=ticked, steps=steps, rest=json.dumps(rest, indent=2, ensure_ascii=False))


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def from_post(single: dict[str, str], multi: dict[str, list[str]]) -> PolicyForm:
    """The form as posted (a row per step up to ``step_count``, the new blank row included)."""
    values = {k: v for k, v in single.items() if not k.startswith("step-") and k not in ("csrf_token", "rest")}
    try:
        count = min(int(single.get("step_count", "0")), 20)
    except ValueError:
        count = 0
    steps = []
    for index in range(count):
        row = {name: single.get(f"step-{index}-{name}", "").strip() for name in STEP_FIELDS}
        row["remove"] = "yes" if single.get(f"step-{index}-remove") else ""
        steps.append(row)
    ticked = {name: multi.get(name, []) for name in ("trigger_type", "trigger_channel", "trigger_direction")}
    return PolicyForm(values=values, ticked=ticked, steps=steps, rest=single.get("rest", "") or "{}")


class RestInvalid(ValueError):
    """The JSON view does not parse into an object: said beside it, and nothing is sent."""


def parse_rest(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text or "{}")
    except json.JSONDecodeError as error:
        raise RestInvalid(f"Not valid JSON: {error.msg} (line {error.lineno}, column {error.colno}).") from None
    if not isinstance(parsed, dict):
        raise RestInvalid("The JSON must be an object ({ … }) of policy fields.")
    return parsed


def merge(form: PolicyForm, *, policy_id: str | None) -> tuple[dict[str, Any], list[int | None]]:
    """The whole policy document the form describes, and for each of its steps the form row it came from
    (``None`` for a step written in the JSON only). Raises ``RestInvalid`` for a JSON view that does not parse."""
    document = parse_rest(form.rest)
    v = form.values
    if policy_id:
        document["id"] = policy_id
    document["name"] = v.get("name", "")
    if v.get("description"):
        document["description"] = v["description"]
    trigger: dict[str, Any] = document["trigger"] if isinstance(document.get("trigger"), dict) else {}
    document["trigger"] = trigger
    trigger["event"] = v.get("trigger_event") or "interaction.logged"
    if v.get("quiet_for"):
        trigger["quiet_for"] = v["quiet_for"]
    conditions: dict[str, Any] = trigger["all"] if isinstance(trigger.get("all"), dict) else {}
    for name, key in (("trigger_type", "type"), ("trigger_channel", "channel"), ("trigger_direction", "direction")):
        if form.ticked.get(name):
            conditions[key] = form.ticked[name]
    if conditions:
        trigger["all"] = conditions
    extras = document.pop("steps", None)
    extras = extras if isinstance(extras, list) else []
    steps: list[Any] = []
    rows: list[int | None] = []
    for index, row in enumerate(form.steps):
        extra = extras[index] if index < len(extras) and isinstance(extras[index], dict) else {}
        if row.get("remove") or not any(row.get(name) for name in STEP_FIELDS):
            continue  # removed, or the blank row for a new step left blank
        step = dict(extra)
        for name in STEP_FIELDS:
            if row.get(name):
                step[name] = row[name]
        steps.append(step)
        rows.append(index)
    for extra in extras[len(form.steps) :]:  # steps written in the JSON view beyond the rows
        steps.append(extra)
        rows.append(None)
    document["steps"] = steps
    for name in ("priority", "repeat"):
        if v.get(name):
            document[name] = v[name]
    channel: dict[str, Any] = document["channel"] if isinstance(document.get("channel"), dict) else {}
    if v.get("channel_use"):
        channel["use"] = v["channel_use"]
    if "channel_fallback" in v:
        channel["fallback"] = _names(v["channel_fallback"])
    document["channel"] = channel
    assign: dict[str, Any] = document["assign"] if isinstance(document.get("assign"), dict) else {}
    if _names(v.get("assign_order", "")):
        assign["order"] = _names(v["assign_order"])
    if v.get("assign_team"):
        assign["team"] = v["assign_team"]
    if assign:
        document["assign"] = assign
    if v.get("overdue_after"):
        escalation: dict[str, Any] = document["escalation"] if isinstance(document.get("escalation"), dict) else {}
        escalation["overdue_after"] = v["overdue_after"]
        document["escalation"] = escalation
    if "enabled" in v:
        document["enabled"] = v["enabled"] == "yes"
    return document, rows


# Where an error about a document path is shown: the control that holds that value.
CONTROLS = {
    ("id",): "id",
    ("name",): "name",
    ("description",): "description",
    ("trigger", "event"): "trigger_event",
    ("trigger", "quiet_for"): "quiet_for",
    ("trigger", "all", "type"): "trigger_type",
    ("trigger", "all", "channel"): "trigger_channel",
    ("trigger", "all", "direction"): "trigger_direction",
    ("priority",): "priority",
    ("repeat",): "repeat",
    ("channel", "use"): "channel_use",
    ("channel", "fallback"): "channel_fallback",
    ("assign", "order"): "assign_order",
    ("assign", "team"): "assign_team",
    ("escalation", "overdue_after"): "overdue_after",
    ("enabled",): "enabled",
}


def _path_of(text: str) -> list[str | int]:
    """``escalation.levels[0].team`` as ``["escalation", "levels", 0, "team"]``."""
    return [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", text)]


def _shown(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def control_for(path: list[str | int], rows: list[int | None], message: str) -> tuple[str, str]:
    """The control an error at ``path`` belongs beside, and the message to show there."""
    names = tuple(p for p in path if isinstance(p, str))
    if path[:1] == ["steps"] and len(path) > 1 and isinstance(path[1], int):
        row = rows[path[1]] if path[1] < len(rows) else None
        rest = path[2:]
        if row is not None and (not rest or (isinstance(rest[0], str) and rest[0] in STEP_FIELDS and len(rest) == 1)):
            return f"step-{row}-{rest[0] if rest else 'id'}", message
        return "rest", f"{_shown(path)}: {message}"
    if path == ["steps"]:
        return "steps", message
    if path == ["trigger"] and "quiet_for" in message:
        return "quiet_for", message
    for length in range(len(names), 0, -1):
        control = CONTROLS.get(names[:length])
        if control and len(path) - len(names) <= 1:  # the control's value itself, or one item of its list
            return control, message
    return "rest", f"{_shown(path) or 'document'}: {message}"


def errors_by_field(body: Any, rows: list[int | None], fallback: str) -> dict[str, str]:
    """The API's 422 (``errors`` with ``loc``, or one ``field``) as messages per control; ``""`` for the rest."""
    found: dict[str, str] = {}
    problem = body if isinstance(body, dict) else {}
    for error in problem.get("errors") or []:
        if not isinstance(error, dict):
            continue
        loc = [p for p in error.get("loc", []) if isinstance(p, int | str)]
        if loc[:1] == ["body"]:
            loc = loc[1:]
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        control, shown = control_for(loc, rows, message)
        found[control] = f"{found[control]} {shown}" if control in found and control == "rest" else shown
    if isinstance(problem.get("field"), str):
        control, shown = control_for(_path_of(problem["field"]), rows, str(problem.get("detail") or fallback))
        found.setdefault(control, shown)
    if not found:
        found[""] = fallback
    return found


# --- new policies start from one of these -----------------------------------------------------------------------

TEMPLATES: dict[str, dict[str, Any]] = {
    "purchase-2-2-2": {
        "title": "2+2+2 after a purchase",
        "summary": "A thank-you two days after a purchase, a check-in at two weeks, another at two months.",
        "document": {
            "name": "Purchase 2+2+2",
            "description": "After a purchase: "
            "a thank-you at +2 days (no selling), check-ins at +2 weeks and +2 months.",
            "trigger": {"event": "interaction.logged", "all": {"type": ["purchase"]}},
            "steps": [
                {
                    "id": "thank-you",
                    "offset": "P2D",
                    "repeat": "covered",
                    "reason": "Thank the customer for their purchase (only thank them: no selling).",
                },
                {
                    "id": "check-in-2-weeks",
                    "offset": "P2W",
                    "reason": "Check in two weeks after the purchase: is everything working?",
                },
                {"id": "check-in-2-months", "offset": "P2M", "reason": "Check in two months after the purchase."},
            ],
            "priority": "normal",
            "repeat": "reanchor",
            "channel": {"use": "preferred", "fallback": ["email", "phone", "sms"]},
            "assign": {"order": ["owner", "agent", "team"]},
            "closing": {"on_reply": "complete", "closes_from": "P1D"},
            "escalation": {"overdue_after": "P2D"},
        },
    },
    "complaint-callback": {
        "title": "Complaint call-back",
        "summary": "An inbound complaint gets a call-back within 24 hours, high priority.",
        "document": {
            "name": "Complaint call-back",
            "description": "After an inbound complaint, a call-back due within 24 hours.",
            "trigger": {"event": "interaction.logged", "all": {"type": ["complaint"], "direction": ["inbound"]}},
            "steps": [
                {
                    "id": "call-back",
                    "offset": "PT24H",
                    "priority": "high",
                    "reason": "Call the customer back about their complaint.",
                }
            ],
            "priority": "high",
            "repeat": "covered",
            "channel": {"use": "phone", "fallback": ["email", "sms"]},
            "assign": {"order": ["agent", "owner", "team"]},
            "closing": {"on_reply": "complete", "reply_from": "created"},
            "escalation": {"overdue_after": "PT0S"},
        },
    },
    "reply-sla": {
        "title": "Reply SLA",
        "summary": "Every inbound message gets a reply within its channel's response time, on that channel.",
        "document": {
            "name": "Reply SLA",
            "description": "An inbound touchpoint gets a reply due within the channel's response time.",
            "trigger": {"event": "interaction.logged", "all": {"direction": ["inbound"]}},
            "steps": [
                {
                    "id": "reply",
                    "reason": "Reply to the customer within the channel's response time.",
                    "offset_by_channel": {
                        "live_chat": "PT5M",
                        "social": "PT1H",
                        "sms": "PT1H",
                        "phone": "PT4H",
                        "email": "PT24H",
                    },
                }
            ],
            "priority": "high",
            "repeat": "covered",
            "channel": {"use": "touchpoint", "fallback": []},
            "assign": {"order": ["agent", "team"]},
            "quiet_hours": None,
            "closing": {"on_reply": "cancel_answered", "reply_from": "created"},
            "escalation": {"overdue_after": "PT0S"},
        },
    },
}


def channel_choices() -> dict[str, str]:
    """What ``channel.use`` may be: the preferred or the touchpoint's channel, or one fixed channel."""
    fixed = {k: f"Always {label}" for k, label in labels.CHANNELS.items() if k != "self_service"}
    return {**CHANNEL_USES, **fixed}
