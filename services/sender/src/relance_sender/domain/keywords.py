"""Inbound SMS keywords: an objection, a re-subscription, or just a reply."""

from __future__ import annotations

import unicodedata
from typing import Final, Literal

KeywordIntent = Literal["objection", "resubscription"]

OPT_OUT: Final = frozenset(
    {"STOP", "ARRET", "UNSUBSCRIBE", "END", "QUIT", "STOPALL", "REVOKE", "OPTOUT", "CANCEL"}
)
OPT_IN: Final = frozenset({"START", "UNSTOP"})


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.strip())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def keyword_intent(body: str) -> KeywordIntent | None:
    """The whole message, trimmed and in any case (ARRÊT folds to ARRET), is the keyword.

    "STOP SMS" (the French wording printed in our messages) counts as STOP too.
    """
    folded = " ".join(_fold(body).split())
    if folded.endswith((".", "!")):
        folded = folded[:-1].rstrip()
    if folded in OPT_OUT or folded in {f"{word} SMS" for word in OPT_OUT}:
        return "objection"
    if folded in OPT_IN:
        return "resubscription"
    return None
