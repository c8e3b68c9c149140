"""Ports of ingest: where carts live (the bus `Publisher` port comes from the runtime)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from relance_events.segment_spec import CartBook


class CartSession(Protocol):
    """One transaction over the carts of a shop."""

    async def load(
        self,
        shop_id: str,
        *,
        contact_keys: Collection[str],
        cart_ids: Collection[str],
        delta_ids: Collection[uuid.UUID],
    ) -> CartBook:
        """The carts of those contacts and ids, and which of `delta_ids` were applied."""
        ...

    async def save(self, book: CartBook) -> None:
        """Persist `book.changed` carts and `book.newly_applied` ids."""
        ...


@dataclass(frozen=True, slots=True)
class CartProbe:
    """Does one of these contacts, or one of these carts, of a shop have an open cart?"""

    shop_id: str
    contact_keys: Collection[str]
    cart_ids: Collection[str]


class CartStore(Protocol):
    def session(self) -> AbstractAsyncContextManager[CartSession]:
        """A session whose changes commit when the block exits without an exception."""
        ...

    async def open_carts(self, probes: Sequence[CartProbe]) -> list[bool]:
        """The answer to each probe, from one read (no lock)."""
        ...
