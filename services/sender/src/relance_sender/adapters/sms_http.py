"""SMS providers over HTTP: a Twilio-compatible adapter and a generic JSON one.

Neither create call is idempotent, so a timeout or a lost response is `Ambiguous`; only a
failure to connect at all (nothing reached the provider) is retried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

from relance_sender.domain.outcome import (
    Accepted,
    Ambiguous,
    Deferred,
    DeliveryOutcome,
    DeliveryReport,
    Rejected,
    classify_twilio_error,
    classify_twilio_status,
)
from relance_sender.errors import InvalidWebhook
from relance_sender.ports import OutgoingSms


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class TwilioConfig:
    account_sid: str
    auth_token: str
    sender: str  # an E.164 number, an alphanumeric sender id, or a Messaging Service SID (MG...)
    base_url: str = "https://api.twilio.com"
    status_callback: str | None = None
    timeout_s: float = 15.0


class TwilioSmsTransport:
    name = "twilio"

    def __init__(self, config: TwilioConfig, client: httpx.AsyncClient | None = None) -> None:
        self._config = config
        self._client = client or httpx.AsyncClient(timeout=config.timeout_s)

    async def send(self, sms: OutgoingSms) -> DeliveryOutcome:
        c = self._config
        form = {"To": sms.to, "Body": sms.body}
        if c.sender.startswith("MG"):
            form["MessagingServiceSid"] = c.sender
        else:
            form["From"] = c.sender
        if c.status_callback:
            # Our message id in the URL: the report finds its message even when the create
            # call's answer (with the provider's id) was lost.
            form["StatusCallback"] = f"{c.status_callback}?{urlencode({'m': sms.message_id})}"
        url = f"{c.base_url.rstrip('/')}/2010-04-01/Accounts/{c.account_sid}/Messages.json"
        try:
            response = await self._client.post(
                url, data=form, auth=(c.account_sid, c.auth_token), timeout=c.timeout_s
            )
        except httpx.ConnectError as exc:
            return Deferred(reason=f"cannot reach provider: {exc}", code="connect")
        except httpx.HTTPError as exc:
            return Ambiguous(reason=f"no answer from provider: {type(exc).__name__}")
        if response.status_code in (200, 201):
            sid = _json_field(response, "sid")
            return Accepted(provider_message_id=sid, detail=f"{response.status_code}")
        code = _json_field(response, "code")
        message = _json_field(response, "message") or response.text[:200]
        outcome = classify_twilio_error(
            response.status_code, int(code) if code and code.isdigit() else None, message
        )
        if isinstance(outcome, Deferred):
            return Deferred(outcome.reason, outcome.code, _retry_after(response))
        return outcome

    async def close(self) -> None:
        await self._client.aclose()


def _json_field(response: httpx.Response, key: str) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    value = data.get(key) if isinstance(data, dict) else None
    return str(value) if value is not None else None


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature: base64(HMAC-SHA1(token, url + key1 + value1 + ...)), keys sorted."""
    payload = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass(frozen=True, slots=True)
class InboundSms:
    from_number: str
    to_number: str
    body: str
    provider_message_id: str | None


def verify_twilio_signature(
    *, auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> None:
    """Raises InvalidWebhook unless Twilio signed this URL and these form fields."""
    if not signature:
        raise InvalidWebhook("missing X-Twilio-Signature")
    expected = twilio_signature(auth_token, url, params)
    if not hmac.compare_digest(expected, signature):
        raise InvalidWebhook("bad X-Twilio-Signature")


def parse_twilio_inbound(
    *, auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> InboundSms:
    """Verify and read a Twilio inbound-message webhook (form fields From, To, Body)."""
    verify_twilio_signature(auth_token=auth_token, url=url, params=params, signature=signature)
    sender = params.get("From")
    if not sender:
        raise InvalidWebhook("inbound SMS without From")
    return InboundSms(
        from_number=sender,
        to_number=params.get("To", ""),
        body=params.get("Body", ""),
        provider_message_id=params.get("MessageSid") or params.get("SmsSid"),
    )


def parse_twilio_status(
    *, auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> DeliveryReport | None:
    """Verify and read a Twilio status callback (MessageStatus, ErrorCode); None for the
    statuses on the way to delivery."""
    verify_twilio_signature(auth_token=auth_token, url=url, params=params, signature=signature)
    code = params.get("ErrorCode", "")
    return classify_twilio_status(
        params.get("MessageStatus", ""), int(code) if code.isdigit() else None
    )


@dataclass(frozen=True, slots=True)
class JsonSmsConfig:
    url: str
    token: str | None
    sender: str
    timeout_s: float = 15.0


class JsonSmsTransport:
    """POST {to, from, body, message_id} as JSON with a bearer token; expects `{"id": ...}`.

    429 and 503 are retried (the provider refused before doing anything); other 4xx are
    permanent; other 5xx and timeouts are ambiguous.
    """

    name = "json"

    def __init__(self, config: JsonSmsConfig, client: httpx.AsyncClient | None = None) -> None:
        self._config = config
        self._client = client or httpx.AsyncClient(timeout=config.timeout_s)

    async def send(self, sms: OutgoingSms) -> DeliveryOutcome:
        c = self._config
        headers = {"Idempotency-Key": sms.message_id}
        if c.token:
            headers["Authorization"] = f"Bearer {c.token}"
        body = {"to": sms.to, "from": c.sender, "body": sms.body, "message_id": sms.message_id}
        try:
            response = await self._client.post(
                c.url, json=body, headers=headers, timeout=c.timeout_s
            )
        except httpx.ConnectError as exc:
            return Deferred(reason=f"cannot reach provider: {exc}", code="connect")
        except httpx.HTTPError as exc:
            return Ambiguous(reason=f"no answer from provider: {type(exc).__name__}")
        status = response.status_code
        if 200 <= status < 300:
            return Accepted(provider_message_id=_json_field(response, "id"), detail=str(status))
        reason = f"http {status}: {response.text[:200]}"
        if status in (429, 503):
            return Deferred(reason=reason, code=str(status), retry_after_s=_retry_after(response))
        if 400 <= status < 500:
            return Rejected(reason=reason, code=str(status))
        return Ambiguous(reason=reason)

    async def close(self) -> None:
        await self._client.aclose()
