from servicekit.catalogue import BOOLEAN, INTEGER, TEXT, TIME, UUID, EventDoc, array_of

# The names producer and consumers use (this module is their one declaration).
INTERACTIONS_STREAM = "CRM_INTERACTIONS"
INTERACTIONS_SUBJECTS = "crm.interactions.>"
INTERACTION_LOGGED = "crm.interaction.logged.v1"
INTERACTION_UPDATED = "crm.interaction.updated.v1"
THREAD_RESOLVED = "crm.thread.resolved.v1"
INTERACTION_REDACTED = "crm.interaction.redacted.v1"

TOUCHPOINT = "services.interactions.schemas:TouchpointRead"

TOUCHPOINT_FIELDS = {
    "id": "the touchpoint's id (UUIDv7)",
    "contact_id": "the contact it is filed under (moves when that contact is merged away)",
    "original_contact_id": "the contact it was logged for",
    "channel": "phone | in_person | email | sms | live_chat | social | self_service",
    "direction": "inbound | outbound | internal",
    "type": "inquiry | complaint | purchase | return | feedback | survey_response | support | sales | note",
    "occurred_at": "when it happened (given by the sender), ISO 8601 UTC",
    "received_at": "when the interactions service stored it",
    "agent, team, subject, thread_id, outcome": "as logged (null when absent; subject, outcome null once redacted)",
    "followup_id": "the follow-up the agent said this touchpoint fulfils (null when none): the follow-ups service "
    "closes it",
    "csat, nps, duration_s": "1-5, 0-10, seconds (null when absent)",
    "amount, currency": "purchase or return amount (JSON number) and ISO 4217 code",
    "source, external_id": "the sending system and its id for the touchpoint",
    "attributes": "free JSON object",
    "sentiment": "VADER compound score of subject and body, -1 (negative) to 1; null without text",
    "version, updated_at, redacted_at": "change counter, last change, erasure time (null unless redacted)",
}

EVENTS: list[EventDoc] = [
    EventDoc(
        type=INTERACTION_LOGGED,
        producer="interactions",
        subject="crm.interactions.logged.<contact_id>",
        meaning="A touchpoint was stored (over HTTP, in a batch, or from crm.ingest.interactions); one event per "
        "stored touchpoint, never for a re-sent one. Carries the whole touchpoint but its body.",
        data=TOUCHPOINT_FIELDS,
        consumers=("followups (policies)", "gateway (timeline, metrics)"),
        model=TOUCHPOINT,
        exclude=("body",),
    ),
    EventDoc(
        type=INTERACTION_UPDATED,
        producer="interactions",
        subject="crm.interactions.updated.<contact_id>",
        meaning="The outcome or attributes of a touchpoint changed (PATCH).",
        data={**TOUCHPOINT_FIELDS, "changed": "list of the changed fields (outcome, attributes)"},
        consumers=("gateway (timeline)",),
        model=TOUCHPOINT,
        exclude=("body",),
        types={"changed": array_of({"type": "string", "enum": ["outcome", "attributes"]})},
    ),
    EventDoc(
        type=THREAD_RESOLVED,
        producer="interactions",
        subject="crm.interactions.thread_resolved.<contact_id>",
        meaning="A thread (the touchpoints of one problem or conversation) was marked resolved.",
        data={
            "thread_id": "the thread",
            "contact_id": "the contact the thread is filed under",
            "resolved_at": "when it was resolved",
            "opened_at": "when its first touchpoint occurred",
            "channel": "channel of its first touchpoint",
            "type": "type of its first touchpoint",
            "complaint": "true when any touchpoint of the thread is a complaint",
            "first_interaction_id": "its first touchpoint",
            "interactions": "how many touchpoints it holds",
        },
        consumers=("followups (satisfaction check after a complaint)", "gateway (timeline, metrics)"),
        types={
            "thread_id": TEXT,
            "contact_id": UUID,
            "resolved_at": TIME,
            "opened_at": TIME,
            "channel": TEXT,
            "type": TEXT,
            "complaint": BOOLEAN,
            "first_interaction_id": UUID,
            "interactions": INTEGER,
        },
    ),
    EventDoc(
        type=INTERACTION_REDACTED,
        producer="interactions",
        subject="crm.interactions.redacted.<contact_id>",
        meaning="After a contact's erasure, the subject, body, outcome and attributes of its touchpoints were "
        "removed; channel, type, direction, times, scores, amounts and sentiment remain for the metrics.",
        data={
            "contact_id": "the erased contact",
            "interactions": "how many touchpoints were redacted",
            "redacted_at": "when",
        },
        consumers=("gateway (timeline)",),
        types={"contact_id": UUID, "interactions": INTEGER, "redacted_at": TIME},
    ),
]
