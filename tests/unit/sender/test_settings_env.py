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


def test_fields_with_an_alias_can_be_set_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELANCE_SMTP_URL", raising=False)
    settings = SenderSettings(smtp_url="smtp://mail.example:25", public_url="https://r.example")
    assert settings.smtp_url == "smtp://mail.example:25"
    assert settings.public_url == "https://r.example"


def test_the_environment_still_wins_by_its_variable_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELANCE_SMTP_URL", "smtp://env.example:25")
    monkeypatch.setenv("RELANCE_PUBLIC_URL", "https://env.example")
    settings = SenderSettings()
    assert (settings.smtp_url, settings.public_url) == (
        "smtp://env.example:25",
        "https://env.example",
    )
