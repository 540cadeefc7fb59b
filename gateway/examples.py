"""One example per schema of the public API, reused by every operation that sends or answers it.

They describe one small story: Ada Lovelace of Analytical Engines Ltd buys by email, the purchase policy
schedules a thank-you, an agent completes it. tests/test_api_document.py validates each against its schema in
the published document (the services' own schemas, gateway/contract.py), so an example cannot drift from what
the API accepts. ``servicekit.openapi.document_examples`` puts them into the document."""

from __future__ import annotations

from typing import Any

CONTACT_ID = "0192f0c4-5b7a-7c1e-9a43-2f1d6b8e0a11"
DUPLICATE_ID = "0192f0c4-9d2e-7a55-8f10-6c3b2a1e4d22"
INTERACTION_ID = "0192f0c5-1a2b-7c3d-8e4f-5a6b7c8d9e01"
FOLLOWUP_ID = "0192f0c5-7e8f-7a9b-8c0d-1e2f3a4b5c02"
KEY_ID = "0192f0c3-0a1b-7c2d-8e3f-4a5b6c7d8e03"
USER_ID = "0192f0c3-4d5e-7f6a-8b7c-8d9e0f1a2b04"
WEBHOOK_ID = "0192f0c6-2c3d-7e4f-8a5b-6c7d8e9f0a05"
DELIVERY_ID = "0192f0c6-8f9a-7b0c-8d1e-2f3a4b5c6d06"
AUDIT_ID = "0192f0c6-a1b2-7c3d-8e4f-5a6b7c8d9e07"
EVENT_ID = "0192f0c5-1a2c-7000-8000-000000000008"
CURSOR = "eyJhdCI6IjIwMjYtMTEtMDNUMTA6MTU6MDBaIn0.q7Zr1c"

CONTACT_CREATE: dict[str, Any] = {
    "name": "Ada Lovelace",
    "company": "Analytical Engines Ltd",
    "emails": ["ada@analytical.example"],
    "phones": ["+442079460000"],
    "tier": "premium",
    "preferred_channel": "email",
    "language": "en",
    "timezone": "Europe/London",
    "tags": ["vip"],
    "consent": {"email": True, "sms": False},
    "stage": "customer",
    "owner": "grace",
}
CONTACT_READ: dict[str, Any] = {
    **CONTACT_CREATE,
    "id": CONTACT_ID,
    "handles": {},
    "external_ids": {"shop": "C-1815"},
    "attributes": {"segment": "enterprise"},
    "status": "active",
    "merged_into": None,
    "erased_at": None,
    "created_at": "2026-11-02T09:30:00Z",
    "updated_at": "2026-11-03T10:15:00Z",
    "version": 3,
}
INTERACTION_CREATE: dict[str, Any] = {
    "contact_id": CONTACT_ID,
    "channel": "email",
    "direction": "inbound",
    "type": "purchase",
    "occurred_at": "2026-11-03T10:15:00Z",
    "subject": "Order 1843",
    "body": "Two difference engines, please.",
    "amount": 1200.0,
    "currency": "GBP",
    "source": "shop",
    "external_id": "order-1843",
    "thread_id": "order-1843",
    "team": "sales",
}
INTERACTION_READ: dict[str, Any] = {
    **INTERACTION_CREATE,
    "id": INTERACTION_ID,
    "original_contact_id": CONTACT_ID,
    "agent": None,
    "attributes": {},
    "csat": None,
    "nps": None,
    "duration_s": None,
    "outcome": None,
    "sentiment": None,
    "followup_id": None,
    "redacted_at": None,
    "received_at": "2026-11-03T10:15:01Z",
    "updated_at": "2026-11-03T10:15:01Z",
    "version": 1,
}
FOLLOWUP_CREATE: dict[str, Any] = {
    "contact_id": CONTACT_ID,
    "reason": "Call back about the second engine's delivery date",
    "due_at": "2026-11-05T09:00:00Z",
    "priority": "high",
    "channel": "phone",
    "assignee": "grace",
}
FOLLOWUP_READ: dict[str, Any] = {
    "id": FOLLOWUP_ID,
    "contact_id": CONTACT_ID,
    "reason": "Thank the customer for their purchase (only thank them: no selling).",
    "status": "scheduled",
    "priority": "normal",
    "channel": "email",
    "assignee": "grace",
    "team": "customer-success",
    "due_at": "2026-11-05T10:15:00Z",
    "overdue_at": "2026-11-07T10:15:00Z",
    "timeline_at": "2026-11-05T10:15:00Z",
    "policy": "purchase-2-2-2",
    "policy_version": 1,
    "step": "thank-you",
    "thread_id": "order-1843",
    "trigger_channel": "email",
    "trigger_event_id": EVENT_ID,
    "trigger_interaction_id": INTERACTION_ID,
    "triggers": [],
    "interaction_id": None,
    "outcome": None,
    "escalation_level": 0,
    "cancel_reason": None,
    "close_reason": None,
    "skip_reason": None,
    "closed_at": None,
    "completed_at": None,
    "created_at": "2026-11-03T10:15:02Z",
    "updated_at": "2026-11-03T10:15:02Z",
    "version": 1,
}
POLICY: dict[str, Any] = {
    "id": "purchase-2-2-2",
    "name": "Purchase 2+2+2",
    "description": "After a purchase, a thank-you at +2 days (no selling), a check-in at +2 weeks and at +2 months.",
    "trigger": {"event": "interaction.logged", "all": {"type": ["purchase"]}},
    "steps": [
        {"id": "thank-you", "offset": "P2D", "repeat": "covered", "reason": "Thank the customer for their purchase."},
        {"id": "check-in-2-weeks", "offset": "P2W", "reason": "Check in two weeks after the purchase."},
        {"id": "check-in-2-months", "offset": "P2M", "reason": "Check in two months after the purchase."},
    ],
    "priority": "normal",
    "channel": {"use": "preferred", "fallback": ["email", "phone", "sms"]},
    "assign": {"order": ["owner", "agent", "team"], "team": "customer-success"},
    "quiet_hours": {"start": "20:00", "end": "09:00"},
    "closing": {"on_reply": "complete", "closes_from": "P1D"},
    "repeat": "reanchor",
    "escalation": {"overdue_after": "P2D"},
}
POLICY_READ: dict[str, Any] = {
    "id": "purchase-2-2-2",
    "version": 1,
    "enabled": True,
    "document": POLICY,
    "updated_at": "2026-11-01T08:00:00Z",
}
API_KEY: dict[str, Any] = {
    "id": KEY_ID,
    "name": "web shop",
    "role": "ingest",
    "prefix": "tp_7Qx2",
    "created_at": "2026-11-01T08:00:00Z",
    "created_by": "admin",
    "expires_at": None,
    "revoked_at": None,
    "rate_limit_per_minute": 60_000,
    "rate_limit_burst": 1_000,
}
USER: dict[str, Any] = {
    "id": USER_ID,
    "email": "grace@touchpoint.example",
    "handle": "grace",
    "name": "Grace Hopper",
    "role": "agent",
    "teams": ["customer-success"],
    "timezone": "Europe/London",
    "created_at": "2026-11-01T08:00:00Z",
    "disabled_at": None,
    "invite_pending": False,
}
TEAM: dict[str, Any] = {
    "id": "customer-success",
    "name": "Customer success",
    "timezone": "Europe/London",
    "created_at": "2026-11-01T08:00:00Z",
    "members": ["grace"],
}
WEBHOOK_CREATE: dict[str, Any] = {
    "url": "https://hooks.example.com/touchpoint",
    "events": ["crm.interaction.logged.v1"],
    "description": "Orders to the warehouse",
}
WEBHOOK: dict[str, Any] = {
    **WEBHOOK_CREATE,
    "id": WEBHOOK_ID,
    "created_at": "2026-11-01T08:00:00Z",
    "created_by": "admin",
}
DELIVERY: dict[str, Any] = {
    "id": DELIVERY_ID,
    "webhook_id": WEBHOOK_ID,
    "event_id": EVENT_ID,
    "event_type": "crm.interaction.logged.v1",
    "status": "delivered",
    "attempts": 2,
    "last_status_code": 200,
    "last_error": None,
    "created_at": "2026-11-03T10:15:02Z",
    "next_attempt_at": None,
    "retry_until": "2026-11-04T10:15:02Z",
    "last_attempt_at": "2026-11-03T10:15:09Z",
    "delivered_at": "2026-11-03T10:15:09Z",
    "dead_lettered_at": None,
}

EXAMPLES: dict[str, Any] = {
    # contacts
    "ContactCreate": CONTACT_CREATE,
    "ContactUpdate": {"tier": "premium", "tags": ["vip", "engines"]},
    "ContactRead": CONTACT_READ,
    "ContactPage": {"items": [CONTACT_READ], "next_cursor": CURSOR},
    "ResolveRequest": {"email": "ada@analytical.example", "create": {"name": "Ada Lovelace"}},
    "MergeRequest": {"source_id": DUPLICATE_ID},
    "ImportResult": {
        "created": 1,
        "updated": 0,
        "unchanged": 0,
        "errors": [{"row": 3, "field": "email", "message": "'ada@' is not an email address"}],
        "error_count": 1,
        "rows": 2,
        "complete": True,
        "dry_run": False,
    },
    "ContactExport": {
        "contact": CONTACT_READ,
        "identities": [{"kind": "email", "value": "ada@analytical.example"}],
        "merged_from": [DUPLICATE_ID],
        "events": [{"type": "crm.contact.created.v1", "time": "2026-11-02T09:30:00Z"}],
        "exported_at": "2026-11-04T12:00:00Z",
    },
    # interactions
    "InteractionCreate": INTERACTION_CREATE,
    "InteractionRead": INTERACTION_READ,
    "InteractionPage": {"items": [INTERACTION_READ], "next_cursor": CURSOR, "next_before": None},
    "InteractionBatch": {"items": [INTERACTION_CREATE, {**INTERACTION_CREATE, "external_id": "order-1844", "csat": 9}]},
    "BatchResults": {
        "results": [
            {"index": 0, "status": 201, "id": INTERACTION_ID, "problem": None},
            {
                "index": 1,
                "status": 422,
                "id": None,
                "problem": {
                    "type": "https://touchpoint.dev/problems/validation",
                    "title": "Invalid request",
                    "status": 422,
                    "detail": "csat: Input should be less than or equal to 5",
                },
            },
        ]
    },
    "InteractionUpdate": {"outcome": "Delivered and thanked", "thread_status": "resolved"},
    "ThreadRead": {
        "thread_id": "order-1843",
        "contact_id": CONTACT_ID,
        "channel": "email",
        "type": "purchase",
        "status": "resolved",
        "complaint": False,
        "opened_at": "2026-11-03T10:15:00Z",
        "resolved_at": "2026-11-03T11:00:00Z",
        "first_response_s": 1800.0,
        "items": [INTERACTION_READ],
        "truncated": False,
    },
    # follow-ups
    "FollowupCreate": FOLLOWUP_CREATE,
    "FollowupRead": FOLLOWUP_READ,
    "FollowupPage": {"items": [FOLLOWUP_READ], "next_cursor": None, "counts": None},
    "FollowupComplete": {"outcome": "Thanked by email", "interaction_id": INTERACTION_ID},
    "FollowupSnooze": {"until": "2026-11-06T09:00:00Z"},
    "FollowupCancel": {"reason": "manual"},
    "FollowupAssign": {"assignee": "grace"},
    "FollowupBulk": {"action": "assign", "ids": [FOLLOWUP_ID], "team": "customer-success"},
    "FollowupBulkResult": {
        "action": "assign",
        "succeeded": 1,
        "failed": 0,
        "results": [{"id": FOLLOWUP_ID, "status": 200, "followup": FOLLOWUP_READ}],
    },
    # policies
    "PolicyDocument": POLICY,
    "PolicyChange": POLICY,
    "PolicyRead": POLICY_READ,
    "PolicyList": {"items": [POLICY_READ]},
    "PolicyPreview": {
        "policy": "purchase-2-2-2",
        "version": 1,
        "enabled": True,
        "draft": False,
        "days": 30,
        "since": "2026-10-05T00:00:00Z",
        "until": "2026-11-04T00:00:00Z",
        "considered": 42,
        "count": 12,
        "by_step": {"thank-you": 4, "check-in-2-weeks": 4, "check-in-2-months": 4},
        "items": [],
        "truncated": False,
    },
    # the customer's story
    "TimelinePage": {
        "contact": {
            "profile": CONTACT_READ,
            "stage": "customer",
            "tier": "premium",
            "owner": "grace",
            "open_followups": 1,
            "overdue_followups": 0,
            "last_touch_per_channel": [{"channel": "email", "last_at": "2026-11-03T10:15:00Z", "touches": 3}],
            "csat_average": 4.5,
            "csat_responses": 2,
            "first_touch_at": "2026-11-02T09:30:00Z",
            "last_touch_at": "2026-11-03T10:15:00Z",
        },
        "items": [
            {
                "id": INTERACTION_ID,
                "kind": "interaction",
                "at": "2026-11-03T10:15:00Z",
                "channel": "email",
                "type": "purchase",
                "title": "Order 1843",
                "summary": "Two difference engines, please.",
            }
        ],
        "next_cursor": None,
    },
    "Journey": {
        "contact_id": CONTACT_ID,
        "stages": [
            {
                "stage": "customer",
                "entered_at": "2026-11-03T10:15:00Z",
                "left_at": None,
                "seconds_in_stage": 86400.0,
                "touchpoints": 1,
                "touchpoints_per_channel": {"email": 1},
                "touchpoints_per_type": {"purchase": 1},
            }
        ],
        "touchpoints_counted": 1,
        "truncated": False,
    },
    "ServiceMetrics": {
        "since": "2026-10-01T00:00:00Z",
        "until": "2026-11-01T00:00:00Z",
        "channel": None,
        "team": "customer-success",
        "csat": None,
        "nps": None,
        "first_response": None,
        "complaints": None,
        "sla": None,
        "followups": None,
        "retention": None,
        "pareto": None,
        "sources": {},
    },
    # administration
    "ApiKeyCreate": {"name": "web shop", "role": "ingest"},
    "ApiKeyCreated": {**API_KEY, "key": "tp_7Qx2.8c1d0f5e3a9b4c7d2e6f1a0b"},
    "ApiKeyList": {"items": [API_KEY]},
    "UserCreate": {
        "email": "grace@touchpoint.example",
        "password": "correct horse battery",
        "role": "agent",
        "name": "Grace Hopper",
        "handle": "grace",
        "teams": ["customer-success"],
        "timezone": "Europe/London",
    },
    "UserUpdate": {"role": "admin"},
    "PasswordLinkCreated": {
        "user_id": USER_ID,
        "purpose": "invite",
        "token": "Zb3q0C1x9TQv2m8sJk4LwE7rYp6uHn5aGd0fRc2iVtA",
        "path": "/password/Zb3q0C1x9TQv2m8sJk4LwE7rYp6uHn5aGd0fRc2iVtA",
        "expires_at": "2026-11-11T09:30:00Z",
    },
    "UserRead": USER,
    "UserList": {"items": [USER]},
    "StaffList": {
        "items": [{"handle": "grace", "name": "Grace Hopper", "teams": ["customer-success"], "active": True}]
    },
    "TeamCreate": {"id": "customer-success", "name": "Customer success", "timezone": "Europe/London"},
    "TeamUpdate": {"name": "Customer care"},
    "TeamRead": TEAM,
    "TeamList": {"items": [TEAM]},
    "AuditPage": {
        "items": [
            {
                "id": AUDIT_ID,
                "at": "2026-11-04T12:00:00Z",
                "actor_kind": "user",
                "actor_id": USER_ID,
                "role": "admin",
                "action": "contact.export",
                "target": CONTACT_ID,
                "outcome": 200,
                "request_id": "5f2a9c",
                "detail": {},
            }
        ],
        "next_cursor": None,
    },
    # webhooks
    "WebhookCreate": WEBHOOK_CREATE,
    "WebhookCreated": {**WEBHOOK, "secret": "whsec_MfKQ9r8GKYqXSaCLhMzlyJ/VmRTYvw6S"},
    "WebhookRead": WEBHOOK,
    "WebhookList": {"items": [WEBHOOK]},
    "WebhookDeliveryRead": DELIVERY,
    "WebhookDeliveryPage": {"items": [DELIVERY], "next_cursor": None},
    # the console's session
    "LoginRequest": {"email": "grace@touchpoint.example", "password": "correct horse battery"},
    "PasswordLinkToken": {"token": "Zb3q0C1x9TQv2m8sJk4LwE7rYp6uHn5aGd0fRc2iVtA"},
    "PasswordLinkInfo": {
        "email": "grace@touchpoint.example",
        "name": "Grace Hopper",
        "purpose": "invite",
        "expires_at": "2026-11-11T09:30:00Z",
    },
    "PasswordSet": {"token": "Zb3q0C1x9TQv2m8sJk4LwE7rYp6uHn5aGd0fRc2iVtA", "password": "correct horse battery"},
    "SessionInfo": {
        "principal_id": USER_ID,
        "kind": "user",
        "role": "agent",
        "name": "Grace Hopper",
        "handle": "grace",
        "teams": ["customer-success"],
        "csrf_token": "3b1f0c9e7a5d",
    },
}

CSV_IMPORT = (
    "name,email,phone,tier\r\nAda Lovelace,ada@analytical.example,+442079460000,premium\r\nBabbage,ada@,,standard\r\n"
)
_CONTACT_COLUMNS = (
    "id,name,company,emails,phones,tier,stage,owner,language,timezone,preferred_channel,tags,external_id.shop,"
    "consent.phone,consent.in_person,consent.email,consent.sms,consent.live_chat,consent.social,"
    "consent.self_service,attributes,created_at,updated_at"
)
_INTERACTION_COLUMNS = (
    "id,occurred_at,contact_id,original_contact_id,channel,direction,type,agent,team,subject,body,thread_id,"
    "outcome,csat,nps,duration_s,amount,currency,sentiment,source,external_id,attributes,received_at,updated_at,"
    "redacted_at,version"
)
_TIMELINE_ITEM = (
    f'{{"id":"{INTERACTION_ID}","kind":"interaction","at":"2026-11-03T10:15:00Z","channel":"email",'
    '"type":"purchase","title":"Order 1843","summary":"Two difference engines, please."}'
)
# Media types that are not JSON: an example per operation, by operationId.
TEXT_EXAMPLES: dict[str, str] = {
    "importContacts": CSV_IMPORT,
    "exportContacts": f"{_CONTACT_COLUMNS}\r\n"
    f"{CONTACT_ID},Ada Lovelace,Analytical Engines Ltd,ada@analytical.example,'+442079460000,premium,customer,"
    "grace,en,Europe/London,email,vip,C-1815,,,true,false,,,,"
    '"{""segment"": ""enterprise""}",2026-11-02T09:30:00Z,2026-11-03T10:15:00Z\r\n',
    "exportInteractions": f"{_INTERACTION_COLUMNS}\r\n"
    f"{INTERACTION_ID},2026-11-03T10:15:00Z,{CONTACT_ID},{CONTACT_ID},email,inbound,purchase,,sales,Order 1843,"
    '"Two difference engines, please.",order-1843,,,,,1200.0,GBP,,shop,order-1843,{},2026-11-03T10:15:01Z,'
    "2026-11-03T10:15:01Z,,1\r\n",
    "streamTimeline": f'event: ready\ndata: {{"contact_id":"{CONTACT_ID}"}}\n\n'
    f"event: item\ndata: {_TIMELINE_ITEM}\nid: {CURSOR}\nretry: 2000\n\n",
}
