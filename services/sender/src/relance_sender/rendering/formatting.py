"""Money and date formatting per locale, without a locale database."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Final

_MONTHS: Final[dict[str, tuple[str, ...]]] = {
    "fr": (
        "janvier", "février", "mars", "avril", "mai", "juin",
        "juillet", "août", "septembre", "octobre", "novembre", "décembre",
    ),
    "en": (
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ),
}  # fmt: skip
_SYMBOLS: Final = {"EUR": "€", "USD": "$", "GBP": "£", "CHF": "CHF", "CAD": "$"}
_NARROW_NBSP: Final = "\u202f"


def _as_decimal(value: object) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"not an amount: {value!r}")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not an amount: {value!r}") from None


def format_money(value: object, currency: str, locale: str) -> str:
    try:
        return _cached_money(value, currency, locale)
    except TypeError:  # unhashable: not an amount either, let the parser say so
        return _format_money(value, currency, locale)


def _format_money(value: object, currency: str, locale: str) -> str:
    amount = _as_decimal(value).quantize(Decimal("0.01"))
    symbol = _SYMBOLS.get(currency.upper(), currency.upper())
    sign = "-" if amount < 0 else ""
    whole, _, cents = f"{abs(amount):.2f}".partition(".")
    if locale == "fr":
        grouped = f"{int(whole):,}".replace(",", _NARROW_NBSP)
        return f"{sign}{grouped},{cents}\u00a0{symbol}"
    grouped = f"{int(whole):,}"
    if len(symbol) > 1:
        return f"{sign}{symbol}\u00a0{grouped}.{cents}"
    return f"{sign}{symbol}{grouped}.{cents}"


# Typed, so True, 1 and 1.0 never share an entry.
_cached_money: Final = lru_cache(maxsize=4096, typed=True)(_format_money)


def _as_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
        except ValueError:
            raise ValueError(f"not a date: {value!r}") from None
    raise ValueError(f"not a date: {value!r}")


def format_date(value: object, locale: str) -> str:
    day = _as_date(value)
    month = _MONTHS.get(locale, _MONTHS["en"])[day.month - 1]
    if locale == "fr":
        return f"{'1er' if day.day == 1 else day.day} {month} {day.year}"
    return f"{day.day} {month} {day.year}"
