from __future__ import annotations

import pytest

from relance_events.payloads import LEAVE_REASONS
from relance_sender.errors import RenderError
from relance_sender.rendering.renderer import BUILTIN_COPY, BUILTIN_LABELS, Renderer

from .conftest import full_context, make_request

EXPECTED_KEYS = {
    ("welcome_pack", "welcome", "vip"),
    ("welcome_pack", "welcome", "standard"),
    ("welcome_pack", "second_purchase", "star"),
    ("welcome_pack", "second_purchase", "standard"),
    ("anti_churn", "reminder_1", None),
    ("anti_churn", "reminder_2", None),
    ("anti_churn", "reminder_3", None),
    ("birthday", "wishes", None),
    ("birthday", "reminder_1", None),
    ("birthday", "reminder_2", None),
    ("abandoned_cart", "reminder_1", None),
    ("abandoned_cart", "reminder_2", None),
    ("abandoned_cart", "reminder_3", None),
    ("cross_sell", "recommendation", "cross_sell"),
    ("cross_sell", "recommendation", "up_sell"),
    ("cross_sell", "reminder", None),
    ("satisfaction_survey", "survey", None),
    ("satisfaction_survey", "thank_you", None),
    ("satisfaction_survey", "reassurance", None),
}


class Links:
    def click(self, url: str) -> str:
        return f"https://t.example/c?u={url}"

    def survey(self, answer: str) -> str:
        return f"https://t.example/s/{answer}"

    def reason(self, reason: str) -> str:
        return f"https://t.example/r/{reason}"


@pytest.mark.parametrize("locale", ["fr", "en"])
def test_every_plan_step_and_variant_ships_in_french_and_english(locale: str) -> None:
    assert set(BUILTIN_COPY[locale]) == EXPECTED_KEYS


@pytest.mark.parametrize("locale", ["fr", "en"])
@pytest.mark.parametrize("key", sorted(EXPECTED_KEYS, key=str))
def test_every_template_renders_email_and_sms(
    renderer: Renderer, locale: str, key: tuple[str, str, str | None]
) -> None:
    request = make_request(*key, locale=locale)
    email = renderer.render_email(
        request, Links(), unsubscribe_url="https://u.example/x", pixel_url="https://p.example/x"
    )
    assert email.subject and email.locale == locale
    assert "Zoé" in email.text and "https://u.example/x" in email.text
    assert 'href="https://u.example/x"' in email.html and "https://p.example/x" in email.html
    sms = renderer.render_sms(request, french_number=True)
    assert sms.text.startswith("Maison Dupont: ") and sms.text.endswith("STOP SMS")


def test_cart_reminder_lists_items_escapes_html_and_offers_no_discount(renderer: Renderer) -> None:
    email = renderer.render_email(
        make_request("abandoned_cart", "reminder_1"), Links(), unsubscribe_url=None, pixel_url=None
    )
    assert "Pull en laine x 2: 49,90\u00a0€" in email.text
    assert "Bonnet &lt;rouge&gt;" in email.html and "Bonnet <rouge>" not in email.html
    assert "118,80\u00a0€" in email.html
    assert "Paiement 100 % sécurisé" in email.text
    assert "BDAY15" not in email.text and "%" not in email.subject


def test_survey_has_three_one_click_answers(renderer: Renderer) -> None:
    email = renderer.render_email(
        make_request("satisfaction_survey", "survey", locale="en"),
        Links(),
        unsubscribe_url=None,
        pixel_url=None,
    )
    for answer in ("very_satisfied", "satisfied", "not_satisfied"):
        assert f'href="https://t.example/s/{answer}"' in email.html
    assert "Very satisfied" in email.text and "Not satisfied" in email.text


def test_birthday_shows_code_and_french_date(renderer: Renderer) -> None:
    email = renderer.render_email(
        make_request("birthday", "wishes"), Links(), unsubscribe_url=None, pixel_url=None
    )
    assert "BDAY15" in email.html and "31 mars 2025" in email.text


def test_missing_variable_is_a_render_error_not_a_blank(renderer: Renderer) -> None:
    context = full_context()
    del context["coupon"]
    with pytest.raises(RenderError) as error:
        renderer.render_email(
            make_request("birthday", "wishes", context=context),
            Links(),
            unsubscribe_url=None,
            pixel_url=None,
        )
    assert "coupon" in str(error.value)


def test_unknown_step_is_a_render_error(renderer: Renderer) -> None:
    with pytest.raises(RenderError):
        renderer.render_sms(make_request("birthday", "no_such_step"), french_number=False)


def test_unknown_locale_falls_back_to_the_default_and_regional_locales_use_their_base(
    renderer: Renderer,
) -> None:
    request = make_request("birthday", "wishes", locale="de-DE")
    assert renderer.render_sms(request, french_number=True).locale == "fr"
    request = make_request("birthday", "wishes", locale="en_GB")
    assert renderer.render_sms(request, french_number=False).text.endswith("Reply STOP to opt out")


def test_sandbox_refuses_template_tricks(renderer: Renderer) -> None:
    context = full_context()
    context["coupon"]["discount"] = "{{ ''.__class__.__mro__ }}"
    email = renderer.render_email(
        make_request("birthday", "wishes", context=context),
        Links(),
        unsubscribe_url=None,
        pixel_url=None,
    )
    # Context values are data, never evaluated as templates.
    assert "{{ &#39;&#39;.__class__.__mro__ }}" in email.html


@pytest.mark.parametrize(
    ("locale", "heading", "label"),
    [("en", "Tell us why", "Too many emails"), ("fr", "Dites-nous pourquoi", "Trop d'e-mails")],
)
@pytest.mark.parametrize("step", ["reminder_1", "reminder_2", "reminder_3"])
def test_anti_churn_reminders_offer_one_click_leave_reasons(
    renderer: Renderer, locale: str, heading: str, label: str, step: str
) -> None:
    email = renderer.render_email(
        make_request("anti_churn", step, locale=locale),
        Links(),
        unsubscribe_url=None,
        pixel_url=None,
    )
    for reason in LEAVE_REASONS:
        assert f'href="https://t.example/r/{reason}"' in email.html
        assert f"https://t.example/r/{reason}" in email.text
    assert heading in email.text and label in email.text
    assert "reason_" not in email.html + email.text


@pytest.mark.parametrize("locale", ["fr", "en"])
def test_every_leave_reason_has_a_label(locale: str) -> None:
    labels = BUILTIN_LABELS[locale]
    assert {"reasons", "reasons_intro"} <= set(labels)
    assert all(labels.get(f"reason_{reason}") for reason in LEAVE_REASONS)


def test_only_anti_churn_asks_why_the_contact_left() -> None:
    asking = {key for key, step in BUILTIN_COPY["en"].items() if "reasons" in step.blocks}
    assert asking == {("anti_churn", f"reminder_{n}", None) for n in (1, 2, 3)}
    assert asking == {key for key, step in BUILTIN_COPY["fr"].items() if "reasons" in step.blocks}
