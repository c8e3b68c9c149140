from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from relance_feedback.domain.signing import (
    WebhookSecret,
    attempt_headers,
    signed_headers,
    webhook_id,
)
from relance_feedback.errors import InvalidWebhookSecret

NEW = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD = "whsec_b2xkLXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHM="
BODY = json.dumps({"type": "survey.not_satisfied", "data": {"é": 1}}, ensure_ascii=False).encode()


def test_signature_verifies_with_the_standardwebhooks_package() -> None:
    now = datetime.now(UTC)
    headers = signed_headers((WebhookSecret.parse(NEW),), "msg_abc", now, BODY)
    assert Webhook(NEW).verify(BODY, headers) == json.loads(BODY)
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["webhook-signature"] == Webhook(NEW).sign("msg_abc", now, BODY.decode())


def test_a_tampered_body_fails_verification() -> None:
    headers = signed_headers((WebhookSecret.parse(NEW),), "msg_abc", datetime.now(UTC), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(BODY + b" ", headers)


def test_rotation_sends_two_signatures_each_verifiable() -> None:
    secrets = (WebhookSecret.parse(NEW), WebhookSecret.parse(OLD))
    headers = signed_headers(secrets, "msg_abc", datetime.now(UTC), BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert all(s.startswith("v1,") for s in headers["webhook-signature"].split(" "))
    Webhook(NEW).verify(BODY, headers)
    Webhook(OLD).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB").verify(BODY, headers)


def test_webhook_id_is_stable_per_answer() -> None:
    assert webhook_id("s", "o", "u") == webhook_id("s", "o", "u")
    assert webhook_id("s", "o", "u") != webhook_id("s", "o2", "u")
    assert webhook_id("s", "o", "u").startswith("msg_")


@pytest.mark.parametrize(
    "text", ["", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_c2hvcnQ="]
)
def test_malformed_secrets_are_refused(text: str) -> None:
    with pytest.raises(InvalidWebhookSecret):
        WebhookSecret.parse(text)


def test_secrets_do_not_leak_in_repr() -> None:
    assert "MfKQ" not in repr(WebhookSecret.parse(NEW))


def test_attempt_headers_sign_when_there_is_a_secret_and_only_then() -> None:
    now = datetime.now(UTC)
    secrets = (WebhookSecret.parse(NEW),)
    assert attempt_headers(secrets, "msg_a", now, BODY) == signed_headers(
        secrets, "msg_a", now, BODY
    )
    unsigned = attempt_headers((), "msg_a", now, BODY)
    assert unsigned == {
        "webhook-id": "msg_a",
        "webhook-timestamp": str(int(now.timestamp())),
        "content-type": "application/json",
    }
