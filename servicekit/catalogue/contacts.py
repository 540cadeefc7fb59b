from servicekit.catalogue import INTEGER, OBJECT, TIME, UUID, EventDoc, array_of

# The names producer and consumers use (this module is their one declaration).
CONTACTS_STREAM = "CRM_CONTACTS"
CONTACTS_SUBJECTS = "crm.contacts.>"
CONTACT_CREATED = "crm.contact.created.v1"
CONTACT_UPDATED = "crm.contact.updated.v1"
CONTACT_MERGED = "crm.contact.merged.v1"
CONTACT_ERASED = "crm.contact.erased.v1"

CONTACT = {"$model": "services.contacts.schemas:ContactRead"}

CONTACT_FIELDS = (
    "the contact as `GET /v1/contacts/{id}` returns it: id, name, company, emails, phones, handles, "
    "external_ids, tier, preferred_channel, language, timezone, tags, attributes, consent, stage, owner, "
    "status, created_at, updated_at, version"
)

EVENTS: list[EventDoc] = [
    EventDoc(
        type=CONTACT_CREATED,
        producer="contacts",
        subject="crm.contacts.created.<contact_id>",
        meaning="A contact was created (by hand, by import, or by resolve-or-create from ingestion).",
        data={"contact": CONTACT_FIELDS},
        consumers=("interactions (copy of the identity directory)", "gateway (timeline)"),
        types={"contact": CONTACT},
    ),
    EventDoc(
        type=CONTACT_UPDATED,
        producer="contacts",
        subject="crm.contacts.updated.<contact_id>",
        meaning="Fields of a contact changed.",
        data={
            "contact_id": "the contact's id",
            "version": "the contact's version after the change",
            "changed": "object: each changed field with its new value",
            "previous": "object: each changed field with its value before",
        },
        consumers=(
            "interactions (copy of the identity directory: emails, phones, handles, external_ids)",
            "followups (consent, timezone, tier)",
            "gateway (timeline: stage and consent changes)",
        ),
        types={"contact_id": UUID, "version": INTEGER, "changed": OBJECT, "previous": OBJECT},
    ),
    EventDoc(
        type=CONTACT_MERGED,
        producer="contacts",
        subject="crm.contacts.merged.<target_id>",
        meaning="A duplicate contact (source) was merged into another (target); the source is now a "
        "tombstone that points to the target, and everything keyed by the source must move to the target.",
        data={
            "source_id": "the merged-away contact",
            "target_id": "the surviving contact",
            "contact": "the target after the merge (" + CONTACT_FIELDS + ")",
            "changed": "the target's profile fields the merge changed",
        },
        consumers=("interactions (re-key; identity copy)", "followups (re-key)", "gateway (timeline)"),
        types={"source_id": UUID, "target_id": UUID, "contact": CONTACT, "changed": array_of({"type": "string"})},
    ),
    EventDoc(
        type=CONTACT_ERASED,
        producer="contacts",
        subject="crm.contacts.erased.<contact_id>",
        meaning="A contact's personal data was erased (GDPR). Every service removes what it holds about "
        "the person and keeps only what carries no personal data.",
        data={
            "contact_id": "the erased contact",
            "erased_at": "when",
            "merged_ids": "the contacts merged into it (transitively), erased with it: each consumer erases what "
            "it still holds under those ids too, and their events leave the bus with its own",
        },
        consumers=("interactions (redact; identity copy)", "followups (cancel all)", "gateway (timeline)"),
        types={"contact_id": UUID, "erased_at": TIME, "merged_ids": array_of(UUID)},
    ),
]
