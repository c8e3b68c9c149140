from __future__ import annotations

import pytest
from pydantic import ValidationError

from relance_feedback.settings import FeedbackSettings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_no_url_is_the_embedded_default() -> None:
    settings = FeedbackSettings(support_webhook_url="", support_webhook_secret=None)
    assert settings.support_webhook_url is None
    assert settings.secrets() == ()


def test_a_webhook_url_needs_a_secret() -> None:
    with pytest.raises(ValidationError, match="needs RELANCE_SUPPORT_WEBHOOK_SECRET"):
        FeedbackSettings(
            support_webhook_url="https://support.example/h", support_webhook_secret=None
        )
    ok = FeedbackSettings(
        support_webhook_url="https://support.example/h", support_webhook_secret=SECRET
    )
    assert len(ok.secrets()) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("support_webhook_url", "ftp://support.example/"),
        ("support_webhook_secret", "not-a-secret"),
        ("webhook_allowlist", "10.0.0.0/33"),
    ],
)
def test_bad_values_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        FeedbackSettings(**{field: value})
