"""Outbound webhooks: subscribe a URL to event types, see what was delivered. Admin only; every change audited."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select
from sqlmodel import col

from gateway import webhooks
from gateway.api.common import AUTH_ERRORS, NOT_FOUND, problem
from gateway.auth import WebhooksManage
from gateway.deps import RuntimeDep, SessionDep, SettingsDep, record_audit
from gateway.models import Webhook
from gateway.schemas import (
    DeliveryStatus,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryPage,
    WebhookDeliveryRead,
    WebhookList,
    WebhookRead,
)
from servicekit.cursors import read_signed, sign
from servicekit.openapi import headers

router = APIRouter(tags=["webhooks"], responses=AUTH_ERRORS)


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookCreated,
    summary="Subscribe a URL to events (the signing secret is shown once)",
    responses={
        201: {"description": "Created", "headers": headers("Location")},
        422: problem("Unknown event type, or a URL that is not public (SSRF guard)"),
    },
)
async def create_webhook(
    body: WebhookCreate,
    principal: WebhooksManage,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    response: Response,
) -> WebhookCreated:
    """Subscribes a URL to event types. Each event is POSTed as a CloudEvent signed per Standard Webhooks (`webhook-
    id`, `webhook-timestamp`, `webhook-signature`), retried with backoff for 24 hours, then dead-lettered. The
    signing secret is in this answer only."""
    webhook, secret = await webhooks.create_webhook(
        session=session,
        url=body.url,
        event_types_wanted=body.events,
        description=body.description,
        created_by=principal.id,
        now=runtime.clock.now(),
        settings=settings,
    )
    await record_audit(
        session=session,
        runtime=runtime,
        principal=principal,
        action="webhook.create",
        target=str(webhook.id),
        outcome=201,
        detail={"events": webhook.events},
    )
    response.headers["Location"] = f"/api/v1/webhooks/{webhook.id}"
    return WebhookCreated(**WebhookRead.model_validate(webhook).model_dump(), secret=secret)


@router.get("/webhooks", response_model=WebhookList, summary="List webhooks (never their secrets)")
async def list_webhooks(principal: WebhooksManage, session: SessionDep) -> WebhookList:
    """Every webhook subscription with its URL and event types; the signing secret is never shown again."""
    rows = (await session.scalars(select(Webhook).order_by(col(Webhook.id).desc()).limit(1000))).all()
    return WebhookList(items=[WebhookRead.model_validate(r) for r in rows])


@router.get("/webhooks/{webhook_id}", response_model=WebhookRead, summary="One webhook", responses=NOT_FOUND)
async def get_webhook(webhook_id: uuid.UUID, principal: WebhooksManage, session: SessionDep) -> WebhookRead:
    """Returns one webhook subscription (without its secret)."""
    return WebhookRead.model_validate(await webhooks.get_webhook(session=session, webhook_id=webhook_id))


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=204,
    summary="Delete a webhook and its deliveries (pending ones are not sent)",
    responses=NOT_FOUND,
)
async def delete_webhook(
    webhook_id: uuid.UUID, principal: WebhooksManage, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Deletes the subscription and its deliveries; pending deliveries are not sent."""
    await webhooks.delete_webhook(session=session, webhook_id=webhook_id)
    await record_audit(
        session=session,
        runtime=runtime,
        principal=principal,
        action="webhook.delete",
        target=str(webhook_id),
        outcome=204,
    )
    return Response(status_code=204)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=WebhookDeliveryPage,
    summary="A webhook's deliveries, newest first: status, attempts, last error, next attempt, dead-lettered",
    responses={**NOT_FOUND, 400: problem("Invalid or tampered cursor")},
)
async def list_deliveries(
    webhook_id: uuid.UUID,
    principal: WebhooksManage,
    session: SessionDep,
    settings: SettingsDep,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> WebhookDeliveryPage:
    """A webhook's deliveries, newest first: the event, status, attempts, last error, next attempt and whether it was
    dead-lettered. Paged with `cursor`."""
    before = None
    if cursor:
        before = read_signed(cursor, settings.signing_key, lambda payload: uuid.UUID(payload["deliveries_before"]))
    rows = await webhooks.list_deliveries(
        session=session, webhook_id=webhook_id, status=status, before=before, limit=limit
    )
    next_cursor = (
        sign({"deliveries_before": str(rows[limit - 1].id)}, settings.signing_key) if len(rows) > limit else None
    )
    return WebhookDeliveryPage(
        items=[WebhookDeliveryRead.model_validate(r) for r in rows[:limit]], next_cursor=next_cursor
    )


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
    response_model=WebhookDeliveryRead,
    summary="Send a dead-lettered delivery again (due now, with a new retry window)",
    responses={**NOT_FOUND, 409: problem("The delivery is not dead-lettered")},
)
async def retry_delivery(
    webhook_id: uuid.UUID,
    delivery_id: uuid.UUID,
    principal: WebhooksManage,
    session: SessionDep,
    runtime: RuntimeDep,
    settings: SettingsDep,
    request: Request,
) -> WebhookDeliveryRead:
    """Sends a dead-lettered delivery again: due now, with a new retry window."""
    delivery = await webhooks.send_again(
        session=session,
        webhook_id=webhook_id,
        delivery_id=delivery_id,
        now=runtime.clock.now(),
        retry_window_s=settings.webhooks_retry_window_s,
    )
    await record_audit(
        session=session,
        runtime=runtime,
        principal=principal,
        action="webhook.delivery_retry",
        target=str(delivery_id),
        outcome=200,
        detail={"webhook_id": str(webhook_id)},
    )
    read = WebhookDeliveryRead.model_validate(delivery)
    await session.commit()
    request.app.state.delivery_worker.wake()
    return read
