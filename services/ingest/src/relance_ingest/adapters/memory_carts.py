"""Carts in memory: for unit tests and for running ingest without a database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager

from relance_events.segment_spec import Cart, CartBook
from relance_ingest.ports import CartProbe


class InMemoryCartSession:
    def __init__(self, store: InMemoryCartStore) -> None:
        self._store = store

    async def load(
        self,
        shop_id: str,
        *,
        contact_keys: Collection[str],
        cart_ids: Collection[str],
        delta_ids: Collection[uuid.UUID],
    ) -> CartBook:
        carts = self._store.carts.get(shop_id, {})
        wanted = {
            cid: cart
            for cid, cart in carts.items()
            if cid in cart_ids or (cart.contact_key in contact_keys)
        }
        applied = {i for i in delta_ids if (shop_id, i) in self._store.applied}
        return CartBook(shop_id, carts=dict(wanted), applied=applied)

    async def save(self, book: CartBook) -> None:
        carts = self._store.carts.setdefault(book.shop_id, {})
        for cart_id in book.changed:
            carts[cart_id] = book.carts[cart_id]
        self._store.applied.update((book.shop_id, i) for i in book.newly_applied)


class InMemoryCartStore:
    """Changes become visible only when the session block exits cleanly."""

    def __init__(self) -> None:
        self.carts: dict[str, dict[str, Cart]] = {}
        self.applied: set[tuple[str, uuid.UUID]] = set()

    async def open_carts(self, probes: Sequence[CartProbe]) -> list[bool]:
        return [
            any(
                cart.is_open and (cid in p.cart_ids or cart.contact_key in p.contact_keys)
                for cid, cart in self.carts.get(p.shop_id, {}).items()
            )
            for p in probes
        ]

    @asynccontextmanager
    async def session(self) -> AsyncIterator[InMemoryCartSession]:
        snapshot = ({k: dict(v) for k, v in self.carts.items()}, set(self.applied))
        try:
            yield InMemoryCartSession(self)
        except BaseException:
            self.carts, self.applied = snapshot
            raise
