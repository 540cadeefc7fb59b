from servicekit.catalogue import BOOLEAN, TEXT, UUID, EventDoc, array_of, nullable, one_of

# The names producer and consumers use (this module is their one declaration).
STAFF_STREAM = "CRM_STAFF"
STAFF_CHANGED = "crm.staff.changed.v1"
STAFF_CHANGED_SUBJECTS = "crm.staff.changed.*"

EVENTS: list[EventDoc] = [
    EventDoc(
        type=STAFF_CHANGED,
        producer="gateway",
        subject="crm.staff.changed.<staff user id>",
        meaning="A staff user was created, changed (display name, role, teams, time zone) or disabled. "
        "The data is what others may know of them: no email, no password.",
        data={
            "id": "the staff user's id",
            "handle": "how owners, assignees and agents name them everywhere (lower case, e.g. jorge.diaz)",
            "name": "display name (may be null)",
            "role": "admin | agent | readonly",
            "teams": "ids of their teams, the first being their home team",
            "timezone": "their IANA time zone (null: the team's or the service default)",
            "active": "false once disabled",
        },
        consumers=(
            "followups (a disabled person's open follow-ups go back to their team's queue)",
            "contacts (its copy of the staff handles: a CSV import's owners)",
        ),
        types={
            "id": UUID,
            "handle": TEXT,
            "name": nullable(TEXT),
            "role": one_of("admin", "agent", "readonly"),
            "teams": array_of(TEXT),
            "timezone": nullable(TEXT),
            "active": BOOLEAN,
        },
    )
]
