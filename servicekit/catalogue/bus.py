from servicekit.catalogue import UUID, EventDoc, array_of

PURGE_REQUESTED = "crm.bus.purge_requested.v1"

EVENTS: list[EventDoc] = [
    EventDoc(
        type=PURGE_REQUESTED,
        producer="contacts, interactions, followups (each for its own stream)",
        subject="crm.purge.<stream root>.<contact_id>",
        meaning="After applying an erasure, a producer asks itself (on CRM_PURGES, a work queue) to remove the "
        "contact's messages from its stream "
        "(docs/privacy.md, The event bus): its purger deletes each one once every consumer of the stream has "
        "acknowledged it, and acknowledges the request when none is left.",
        data={"contact_ids": "the erased contact and every contact merged into it"},
        consumers=("the producer itself (<root>-purge)",),
        types={"contact_ids": array_of(UUID)},
    ),
]
