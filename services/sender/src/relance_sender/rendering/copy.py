"""The shape of a step's copy. Every string is a Jinja template rendered with the message
context, so copy can name the contact, the order, the code..."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Block = Literal[
    "last_order",
    "cart",
    "promo",
    "recommendations",
    "survey",
    "reasons",
    "reassurance",
    "loyalty",
    "review",
    "support",
]

# (plan, step, variant) with variant None for steps that have none.
CopyKey = tuple[str, str, str | None]


@dataclass(frozen=True, slots=True)
class StepCopy:
    subject: str
    preheader: str
    heading: str
    paragraphs: tuple[str, ...]
    sms: str
    cta_label: str | None = None
    cta_url: str | None = None
    blocks: tuple[Block, ...] = ()
    closing: str | None = None
