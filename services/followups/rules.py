"""Policies as data: the document staff write, and what one step of a policy decides for one touchpoint.

Pure functions, no database: the same code makes follow-ups from events, from the premium-quiet
sweep, and in a policy preview.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal, Self

import isodate
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from servicekit.channels import Channel
from servicekit.numbers import NotBoolean
from services.followups.hours import add_business_time, out_of_quiet_hours, zone

Priority = Literal["low", "normal", "high", "urgent"]
Direction = Literal["inbound", "outbound", "internal"]
InteractionType = Literal[
    "inquiry", "complaint", "purchase", "return", "feedback", "survey_response", "support", "sales", "note"
]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
AssignSource = Literal["agent", "owner", "team"]
WORKDAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri")
ASSIGN_ORDER: tuple[AssignSource, ...] = ("agent", "owner", "team")
TriggerEvent = Literal["interaction.logged", "thread.resolved", "contact.quiet"]

# Channels a follow-up can reach a customer on (self-service is theirs, not ours).
REACHABLE = ("email", "phone", "sms", "live_chat", "social", "in_person")
DEFAULT_FALLBACK: list[Channel] = [Channel.email, Channel.phone, Channel.sms, Channel.live_chat, Channel.social]
SLUG = r"^[a-z0-9][a-z0-9_.-]{0,99}$"


# The longest duration a policy may hold: a due time (before the year 9000) plus it is still a date.
MAX_DURATION = timedelta(days=3653)
_REFERENCE = datetime(2000, 1, 1)


def _duration(value: str) -> str:
    try:
        parsed = isodate.parse_duration(value)
        length = _REFERENCE + parsed - _REFERENCE  # calendar months and years counted from a fixed date
    except (isodate.ISO8601Error, ValueError, TypeError, OverflowError):
        raise ValueError("not an ISO 8601 duration of at most 10 years (e.g. PT4H, P2D, P2W, P2M)") from None
    if (parsed if isinstance(parsed, timedelta) else parsed.tdelta) < timedelta(0) or length < timedelta(0):
        raise ValueError("durations cannot be negative")
    if length > MAX_DURATION:
        raise ValueError("durations are at most 10 years (P10Y)")
    return value


def _clock_duration(value: str) -> str:
    _duration(value)
    if not isinstance(isodate.parse_duration(value), timedelta):
        raise ValueError("use days, hours or minutes here (months and years have no fixed length)")
    return value


Duration = Annotated[str, StringConstraints(max_length=40), AfterValidator(_duration)]
ClockDuration = Annotated[str, StringConstraints(max_length=40), AfterValidator(_clock_duration)]
Slug = Annotated[str, StringConstraints(pattern=SLUG)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Repeat = Literal["reanchor", "covered", "stack"]
REPEAT_DESCRIPTION = (
    "A new trigger while a follow-up of the same (contact, policy, step, thread) is open: reanchor (its due time "
    "counts from the new trigger), covered (recorded on it, nothing else changes) or stack (a follow-up more)"
)


@lru_cache(maxsize=4096)
def parse_duration(value: str) -> timedelta | isodate.Duration:
    """An ISO 8601 duration of a policy, parsed once: every touchpoint evaluates the same few, and parsing
    was a tenth of the CPU of making a follow-up."""
    return isodate.parse_duration(value)


def add_duration(at: datetime, value: str) -> datetime:
    """``at`` plus an ISO 8601 duration; months and years are calendar months and years."""
    result: datetime = at + parse_duration(value)
    return result


def seconds_of(value: str) -> float:
    parsed = parse_duration(value)
    delta = parsed if isinstance(parsed, timedelta) else parsed.tdelta
    return float(delta.total_seconds())


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# NotBoolean: a JSON true is not a score of 1 (lax integers take booleans; the fuzzer sent one).
Score5 = Annotated[int, Field(ge=1, le=5), NotBoolean]
Score10 = Annotated[int, Field(ge=0, le=10), NotBoolean]


class Match(Strict):
    """Conditions on the touchpoint (or resolved thread) and the contact; every given one must hold."""

    type: list[InteractionType] | None = Field(None, max_length=20)
    channel: list[Channel] | None = Field(None, max_length=20)
    direction: list[Direction] | None = Field(None, max_length=3)
    tier: list[Literal["standard", "premium"]] | None = Field(None, max_length=2)
    tags_any: list[Annotated[str, StringConstraints(max_length=64)]] | None = Field(None, max_length=50)
    csat_max: Annotated[int, Field(ge=1, le=5), NotBoolean] | None = Field(
        None, description="csat at most (a touchpoint without csat fails)"
    )
    nps_max: Annotated[int, Field(ge=0, le=10), NotBoolean] | None = Field(
        None, description="nps at most (a touchpoint without nps fails)"
    )
    complaint: bool | None = Field(None, description="thread.resolved: whether the thread held a complaint")

    def holds(self, touch: dict[str, Any], contact: ContactFacts) -> bool:
        if self.type is not None and touch.get("type") not in self.type:
            return False
        if self.channel is not None and touch.get("channel") not in self.channel:
            return False
        if self.direction is not None and touch.get("direction") not in self.direction:
            return False
        if self.tier is not None and contact.tier not in self.tier:
            return False
        if self.tags_any is not None and not set(self.tags_any) & set(contact.tags):
            return False
        if self.csat_max is not None and not (_int(touch.get("csat")) is not None and touch["csat"] <= self.csat_max):
            return False
        if self.nps_max is not None and not (_int(touch.get("nps")) is not None and touch["nps"] <= self.nps_max):
            return False
        complaint = bool(touch.get("complaint")) or touch.get("type") == "complaint"
        return self.complaint is None or complaint == self.complaint


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Trigger(Strict):
    """What makes the follow-up: an event, ``all`` of whose conditions hold, and one of ``any`` (when given)."""

    event: TriggerEvent
    all: Match = Match()
    any: list[Match] = Field(default_factory=list, max_length=20)
    quiet_for: Duration | None = Field(None, description="contact.quiet: no touchpoint for this long (e.g. P60D)")

    def holds(self, touch: dict[str, Any], contact: ContactFacts) -> bool:
        return self.all.holds(touch, contact) and (not self.any or any(m.holds(touch, contact) for m in self.any))

    @model_validator(mode="after")
    def _quiet_needs_duration(self) -> Trigger:
        if self.event == "contact.quiet" and self.quiet_for is None:
            raise ValueError("a contact.quiet trigger needs quiet_for")
        return self


class Closing(Strict):
    """How a logged outbound touchpoint closes a follow-up: only one on the follow-up's own thread (or, when its
    trigger had no thread, one without a thread on the follow-up's channel), from the time given here on; or any
    touchpoint naming it (``followup_id``). See services/followups/closing.py."""

    on_reply: Literal["complete", "cancel_answered"] = "complete"
    reply_from: Literal["created", "due"] = Field(
        "due", description="Count outbound touchpoints from the trigger on (created) or from due_at on (due)"
    )
    closes_from: ClockDuration | None = Field(
        None, description="A check-in's window: count outbound touchpoints from this long before due_at (e.g. P1D)"
    )


class Step(Strict):
    """One follow-up a policy makes: ``offset`` after its anchor (the touchpoint, or the thread's
    resolution for a thread.resolved trigger, or the sweep for contact.quiet)."""

    id: Slug
    reason: Name
    offset: Duration = "PT0S"
    offset_by_channel: dict[Channel, Duration] | None = Field(
        None, description="Offset per channel of the touchpoint (a channel absent here makes no follow-up)"
    )
    business_time: bool = Field(False, description="Count the offset in business hours only")
    trigger: Trigger | None = Field(None, description="This step's own trigger (else the policy's)")
    priority: Priority | None = None
    repeat: Repeat | None = Field(None, description="This step's own repeat (else the policy's)")
    closing: Closing | None = Field(None, description="This step's own closing (else the policy's)")

    @model_validator(mode="after")
    def _business_time_is_fixed(self) -> Step:
        offsets = [self.offset, *(self.offset_by_channel or {}).values()]
        if self.business_time and not all(_fixed(value) for value in offsets):
            raise ValueError("a business-time offset must be in days, hours or minutes")
        return self


WALL_CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?$"


def _wall_clock(value: Any) -> Any:
    """Business and quiet hours are wall-clock times in the contact's zone. A time with an offset (which
    pydantic's ``time`` takes) was stored, then could not be compared with local times: every touchpoint the
    policy matched failed in the consumer with a TypeError and was retried. A number (seconds) is no time."""
    if isinstance(value, time):
        return value
    if not isinstance(value, str) or not re.match(WALL_CLOCK, value):
        raise ValueError("a time of day is HH:MM or HH:MM:SS, without an offset (the contact's time zone applies)")
    return value


WallClock = Annotated[
    time,
    BeforeValidator(_wall_clock),
    WithJsonSchema(
        {"type": "string", "pattern": WALL_CLOCK, "description": "HH:MM[:SS], wall-clock time in the contact's zone"}
    ),
]


class BusinessHours(Strict):
    days: list[Day] = Field(default_factory=lambda: list(WORKDAYS), max_length=7)
    start: WallClock = time(9, 0)
    end: WallClock = time(17, 0)


class QuietHours(Strict):
    start: WallClock = time(21, 0)
    end: WallClock = time(8, 0)


class ChannelRule(Strict):
    """``use`` first (the contact's preferred channel, the touchpoint's, or a fixed one) unless opted out,
    then the first allowed in ``fallback``; none left → skipped as opted_out."""

    use: Literal["preferred", "touchpoint"] | Channel = "preferred"
    fallback: list[Channel] = Field(default_factory=lambda: list(DEFAULT_FALLBACK), max_length=7)


class AssignRule(Strict):
    """The first of ``order`` that exists: the touchpoint's agent, the contact's owner, the team queue."""

    order: list[AssignSource] = Field(default_factory=lambda: list(ASSIGN_ORDER), min_length=1, max_length=3)
    team: Name | None = Field(None, description="Queue when the touchpoint names no team")


class EscalationLevel(Strict):
    after: ClockDuration = Field(description="After due_at")
    assignee: Name | None = None
    team: Name | None = None


class Escalation(Strict):
    overdue_after: ClockDuration = Field("P1D", description="A due follow-up not done this long after due_at")
    levels: list[EscalationLevel] = Field(default_factory=list, max_length=5)


class _PolicyFields(Strict):
    """What a policy says, shared by the stored document and a PUT body (which differ in ``id`` and ``enabled``)."""

    id: Slug | None = None
    name: Name
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    enabled: bool | None = None
    trigger: Trigger
    steps: list[Step] = Field(min_length=1, max_length=10)
    priority: Priority = "normal"
    channel: ChannelRule = ChannelRule()
    assign: AssignRule = AssignRule()
    business_hours: BusinessHours = BusinessHours()
    quiet_hours: QuietHours | None = QuietHours()
    closing: Closing = Closing()
    escalation: Escalation = Escalation()
    repeat: Repeat = Field("covered", description=REPEAT_DESCRIPTION)

    @model_validator(mode="after")
    def _unique_steps(self) -> Self:
        # Checked on a PUT body too: one that PolicyDocument refuses would otherwise fail after parsing (a 500).
        ids = [step.id for step in self.steps]
        if len(set(ids)) != len(ids):
            raise ValueError("step ids must be unique within a policy")
        return self


class PolicyDocument(_PolicyFields):
    id: Slug
    enabled: bool = True

    def trigger_of(self, step: Step) -> Trigger:
        return step.trigger or self.trigger

    def repeat_of(self, step: Step) -> Repeat:
        return step.repeat or self.repeat


class PolicyChange(_PolicyFields):
    """A PUT body: the document without its id (taken from the path); an id, when given, must match."""


@dataclass
class ContactFacts:
    """What a policy may look at about a contact."""

    tier: str = "standard"
    timezone: str | None = None
    preferred_channel: str | None = None
    consent: dict[str, bool] = field(default_factory=dict)
    owner: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Decision:
    """What one policy step makes for one trigger: a follow-up to schedule, or one skipped (no channel)."""

    policy: str
    policy_version: int
    step: str
    reason: str
    anchor_at: datetime
    due_at: datetime
    channel: str | None
    priority: str
    assignee: str | None
    team: str | None
    thread_id: str | None
    plan: dict[str, Any]
    trigger_interaction_id: str | None = None
    trigger_channel: str | None = None

    @property
    def skip_reason(self) -> str | None:
        return "opted_out" if self.channel is None else None


def is_reply(rule: dict[str, Any], touched: str | None, direction: str | None) -> bool:
    """A reply owed to a customer who wrote in: on the channel they used, whatever their outreach consent says
    (consent governs outreach, not answers)."""
    return rule.get("use") == "touchpoint" and direction == "inbound" and touched in REACHABLE


def choose_channel(
    *, rule: dict[str, Any], preferred: str | None, touched: str | None, consent: dict[str, bool]
) -> str | None:
    """The channel to reach the customer on: ``use`` unless opted out, else the first allowed fallback."""
    use = rule.get("use", "preferred")
    first = preferred if use == "preferred" else touched if use == "touchpoint" else use
    for candidate in [first, *rule.get("fallback", [])]:
        if candidate in REACHABLE and consent.get(candidate) is not False:
            return str(candidate)
    return None


def decide(
    *,
    policy: PolicyDocument,
    version: int,
    step: Step,
    touch: dict[str, Any],
    anchor_at: datetime,
    contact: ContactFacts,
    default_timezone: str,
) -> Decision | None:
    """What ``step`` of ``policy`` makes for this touchpoint (or resolved thread, or quiet contact), or None
    when its trigger does not hold."""
    if not policy.trigger_of(step).holds(touch, contact):
        return None
    offset = step.offset
    if step.offset_by_channel is not None:
        by_channel = {str(k): v for k, v in step.offset_by_channel.items()}
        if touch.get("channel") not in by_channel:
            return None
        offset = by_channel[str(touch["channel"])]
    plan = make_plan(policy=policy, step=step, offset=offset)
    due_at = due_time(plan=plan, anchor_at=anchor_at, timezone=contact.timezone, default_timezone=default_timezone)
    assignee, team = None, touch.get("team") or policy.assign.team
    for source in policy.assign.order:
        if source == "agent" and touch.get("agent"):
            assignee = str(touch["agent"])
            break
        if source == "owner" and contact.owner:
            assignee = contact.owner
            break
        if source == "team":
            break
    if is_reply(plan["channel"], touch.get("channel"), touch.get("direction")):
        plan["reply"] = True
        channel: str | None = str(touch["channel"])
    else:
        channel = choose_channel(
            rule=plan["channel"], preferred=contact.preferred_channel, touched=touch.get("channel"),
            consent=contact.consent,
        )  # fmt: skip
    return Decision(
        policy=policy.id,
        policy_version=version,
        step=step.id,
        reason=step.reason,
        anchor_at=anchor_at,
        due_at=due_at,
        channel=channel,
        priority=step.priority or policy.priority,
        assignee=assignee,
        team=team,
        thread_id=touch.get("thread_id"),
        plan=plan,
        trigger_interaction_id=touch.get("id"),
        trigger_channel=touch.get("channel"),
    )


def make_plan(*, policy: PolicyDocument, step: Step, offset: str) -> dict[str, Any]:
    """The parts of the policy a follow-up keeps, so later versions of the policy never change it."""
    closing = step.closing or policy.closing
    return {
        "offset": offset,
        "business_time": step.business_time,
        "business_hours": policy.business_hours.model_dump(mode="json"),
        # Quiet hours move a due time out of the night; business-time offsets are already in the day.
        "quiet_hours": policy.quiet_hours.model_dump(mode="json") if policy.quiet_hours else None,
        "channel": policy.channel.model_dump(mode="json"),
        "overdue_after_s": seconds_of(policy.escalation.overdue_after),
        "levels": [
            {"after_s": seconds_of(level.after), "assignee": level.assignee, "team": level.team}
            for level in policy.escalation.levels
        ],
        "on_reply": closing.on_reply,
        "reply_from": closing.reply_from,
        "closes_from_s": seconds_of(closing.closes_from) if closing.closes_from else None,
        "repeat": policy.repeat_of(step),
    }


def due_time(*, plan: dict[str, Any], anchor_at: datetime, timezone: str | None, default_timezone: str) -> datetime:
    tz = zone(timezone, default_timezone)
    if plan.get("business_time"):
        hours = plan["business_hours"]
        return add_business_time(
            anchor_at,
            parse_duration(plan["offset"]),
            tz=tz,
            days=hours["days"],
            opens=time.fromisoformat(hours["start"]),
            closes=time.fromisoformat(hours["end"]),
        )
    due = add_duration(anchor_at, plan["offset"])
    quiet = plan.get("quiet_hours")
    if quiet:
        due = out_of_quiet_hours(
            due, tz=tz, starts=time.fromisoformat(quiet["start"]), ends=time.fromisoformat(quiet["end"])
        )
    return due


def _fixed(value: str) -> bool:
    return isinstance(parse_duration(value), timedelta)


def manual_plan(channel: str | None) -> dict[str, Any]:
    """A follow-up made by hand keeps its channel (or none), is never escalated, and closes on a reply after due."""
    return {
        "channel": {"use": channel, "fallback": []} if channel else {"use": "preferred", "fallback": []},
        "overdue_after_s": 86_400.0,
        "levels": [],
        "on_reply": "complete",
        "reply_from": "due",
        "repeat": "stack",
        "manual": True,
    }
