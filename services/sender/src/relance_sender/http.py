"""HTTP endpoints of the sender: the SMS provider's webhooks (inbound messages, delivery
reports)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from relance_sender.adapters.sms_http import parse_twilio_inbound, parse_twilio_status
from relance_sender.errors import InvalidRecipient, InvalidWebhook
from relance_sender.services import HandleInboundSms, RecordDeliveryReport
from relance_sender.wiring import TWILIO_STATUS_PATH

log = logging.getLogger("relance_sender")
T = TypeVar("T")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


@dataclass(frozen=True, slots=True)
class SenderHttpDeps:
    inbound_sms: HandleInboundSms
    delivery_reports: RecordDeliveryReport
    public_url: str
    # Twilio signs webhooks with the account's auth token; None: the endpoint is off.
    twilio_auth_token: str | None


def _error(status: int, field: str, reason: str) -> JSONResponse:
    return JSONResponse({"errors": [{"field": field, "reason": reason}]}, status_code=status)


def build_router(deps: SenderHttpDeps) -> APIRouter:
    router = APIRouter(tags=["sender"])

    async def twilio_webhook(request: Request, parse: Callable[..., T]) -> T | Response:
        """The webhook read by `parse` once its signature checks out, or the answer to give:
        404 when no Twilio account is configured, 403 for a bad signature or form. The URL
        Twilio signed is our public base, this path and query."""
        if deps.twilio_auth_token is None:
            return _error(404, "provider", "no Twilio account is configured")
        form = await request.form()
        url = deps.public_url.rstrip("/") + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        try:
            return parse(
                auth_token=deps.twilio_auth_token,
                url=url,
                params={key: value for key, value in form.items() if isinstance(value, str)},
                signature=request.headers.get("x-twilio-signature"),
            )
        except InvalidWebhook as exc:
            return _error(403, "X-Twilio-Signature", str(exc))

    @router.post(
        "/v1/sms/inbound/twilio/{shop_id}",
        summary="Twilio inbound SMS webhook: STOP / ARRET / UNSUBSCRIBE and START",
        response_model=None,
    )
    async def twilio_inbound(shop_id: str, request: Request) -> Response:
        inbound = await twilio_webhook(request, parse_twilio_inbound)
        if isinstance(inbound, Response):
            return inbound
        try:
            action = await deps.inbound_sms.handle(
                shop_id=shop_id,
                from_number=inbound.from_number,
                body=inbound.body,
                provider_message_id=inbound.provider_message_id,
            )
        except InvalidRecipient as exc:
            return _error(400, "From", str(exc))
        log.info("inbound sms", extra={"shop_id": shop_id, "action": action})
        return Response(EMPTY_TWIML, media_type="text/xml")

    @router.post(
        TWILIO_STATUS_PATH,
        summary="Twilio delivery reports (StatusCallback): message.delivered or a bounce",
        response_model=None,
    )
    async def twilio_status(request: Request, m: str = "") -> Response:
        report = await twilio_webhook(request, parse_twilio_status)
        if isinstance(report, Response):
            return report
        if not m:
            return _error(400, "m", "the message id is missing from the callback URL")
        action = "ignored"
        if report is not None:
            action = await deps.delivery_reports.handle(message_id=m, report=report)
        log.info("sms delivery report", extra={"message_id": m, "action": action})
        return Response(status_code=204)

    return router
