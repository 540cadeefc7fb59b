from servicekit.catalogue import EventDoc

# The names producer and consumers use (this module is their one declaration).
FOLLOWUPS_STREAM = "CRM_FOLLOWUPS"
FOLLOWUPS_SUBJECTS = "crm.followups.>"
FOLLOWUP_ACTIONS = ("scheduled", "due", "overdue", "escalated", "completed", "cancelled", "skipped")


def followup_type(action: str) -> str:
    """The event type of a follow-up action: ``due`` -> ``crm.followup.due.v1``."""
    return f"crm.followup.{action}.v1"


FOLLOWUP_FIELDS = {
    "id": "the follow-up's id (UUIDv7)",
    "contact_id": "the contact it is for (moves when that contact is merged away)",
    "policy, policy_version, step": "the policy, its version and step that made it (null when made by hand)",
    "reason": "a sentence a person reads: what to do and why",
    "channel": "phone | in_person | email | sms | live_chat | social; null when no channel was given by hand",
    "due_at": "when it is due, ISO 8601 UTC",
    "status": "scheduled | due | completed | cancelled | skipped",
    "priority": "low | normal | high | urgent",
    "assignee, team": "who does it: a person, else the team's queue",
    "trigger_event_id": "the CloudEvent id that made it (unique with policy and step); quiet:<contact>:<time> "
    "for premium-quiet",
    "trigger_interaction_id, trigger_channel, thread_id": "what it answers: the touchpoint that made it (a resolved "
    "thread's first one), its channel and its thread (null when it had none)",
    "triggers": "later triggers of the same policy step and thread while it was open: [{event_id, interaction_id, "
    "at, handled: reanchored | covered}]",
    "completed_at, outcome, interaction_id": "when and how it was done, and the touchpoint that did it",
    "close_reason": "why what closed it counted: touchpoint_named_it | outbound_on_its_thread | "
    "outbound_on_its_channel | completed_by_agent (null while open, or when cancelled or skipped otherwise)",
    "escalation_level": "how many escalation steps were taken (0: none)",
    "cancel_reason, skip_reason": "opted_out | erased | answered | superseded | manual",
    "overdue_at": "when it counts as overdue if still open",
    "closed_at": "when it was completed, cancelled or skipped",
    "timeline_at": "where it shows on the customer's timeline: closed_at once closed, else due_at",
    "created_at, updated_at, version": "when it was made, last changed, and its change counter",
}

_CONSUMERS = ("gateway (timeline header: open and overdue follow-ups)",)


def _doc(action: str, meaning: str) -> EventDoc:
    return EventDoc(
        type=followup_type(action),
        producer="followups",
        subject=f"crm.followups.{action}.<contact_id>",
        meaning=meaning + " The data is the follow-up as GET /v1/followups/{id} returns it.",
        data=FOLLOWUP_FIELDS,
        consumers=_CONSUMERS,
        model="services.followups.schemas:FollowupRead",
    )


EVENTS: list[EventDoc] = [
    _doc(
        "scheduled",
        "A follow-up was made (by a policy or by hand), or an open one changed: reassigned, snoozed, moved to "
        "another channel after a consent change, rescheduled after a time-zone change, or a new trigger of it "
        "re-anchored or covered (triggers).",
    ),
    _doc("due", "A follow-up fell due (the scheduler, once per due time; a snooze makes it fall due again)."),
    _doc("overdue", "A due follow-up is still open past its policy's overdue_after."),
    _doc(
        "escalated", "An overdue follow-up went up one escalation level (assignee or team changed as the policy says)."
    ),
    _doc(
        "completed",
        "A follow-up was done: by hand, by a touchpoint naming it, or by an outbound touchpoint on its thread (with no "
        "thread: on its channel) inside its window (interaction_id and close_reason set).",
    ),
    _doc(
        "cancelled",
        "A follow-up was cancelled: answered (a reply SLA met by an outbound touchpoint), erased (the contact was "
        "erased), superseded or manual.",
    ),
    _doc("skipped", "A follow-up could not be made on any channel the customer accepts (skip_reason opted_out)."),
]
