"""Where a message goes: an email address, or a phone number in E.164."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import phonenumbers

from relance_sender.domain.ledger import Channel
from relance_sender.errors import InvalidRecipient

_EMAIL = re.compile(r"^[^@\s<>\"()\[\],;:\\]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,63}$")


def normalize_email(value: str) -> str:
    address = value.strip()
    if len(address) > 320 or not _EMAIL.match(address):
        raise InvalidRecipient(f"not a deliverable email address: {value!r}")
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


def normalize_phone(value: str, default_region: str | None = "FR") -> str:
    """E.164; a national number is read in the contact's country (France by default)."""
    try:
        number = phonenumbers.parse(value, None if value.startswith("+") else default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidRecipient(f"not a phone number: {value!r}") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidRecipient(f"not a valid phone number: {value!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def is_french_number(e164: str) -> bool:
    return e164.startswith("+33") or e164.startswith(("+262", "+590", "+594", "+596", "+269"))


def recipient_address(channel: Channel, contact: Mapping[str, Any]) -> str:
    """The normalised address of a contact for a channel, or InvalidRecipient."""
    if channel == "email":
        email = contact.get("email")
        if not isinstance(email, str) or not email:
            raise InvalidRecipient("the contact has no email address")
        return normalize_email(email)
    phone = contact.get("phone")
    if not isinstance(phone, str) or not phone:
        raise InvalidRecipient("the contact has no phone number")
    country = contact.get("country")
    return normalize_phone(phone, country.upper() if isinstance(country, str) else "FR")
