"""The email layout (HTML and plain text) around a step's copy, with its content blocks.

Blocks read the message context directly (`cart["items"]`, `promo.code`...), so a block
whose data is missing fails the render under StrictUndefined instead of sending blanks.
The layouts live in `templates/` next to this module.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def layout_source(kind: str) -> str:
    """`kind` is "html" or "txt"."""
    return (files("relance_sender.rendering") / "templates" / f"layout.{kind}.j2").read_text(
        encoding="utf-8"
    )
