"""Settings read from the environment as operators write them."""

from __future__ import annotations

import pytest

from relance_sender.settings import SenderSettings


def test_empty_variables_mean_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELANCE_SENDER_SMS_PROVIDER", "")
    monkeypatch.setenv("RELANCE_SMTP_URL", "")
    monkeypatch.setenv("RELANCE_SENDER_FAILPOINT", "")
    settings = SenderSettings()
    assert settings.sms_provider is None
    assert settings.smtp_url is None
    assert settings.failpoint is None


def test_a_real_value_is_still_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELANCE_SENDER_SMS_PROVIDER", "carrier-pigeon")
    with pytest.raises(ValueError, match="sms_provider"):
        SenderSettings()
