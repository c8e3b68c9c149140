"""A ready-made `ServiceComponent`: some routers plus consumer loops and background tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from fastapi.routing import APIRouter

from relance_runtime.consumer import ConsumerLoop


class Component:
    def __init__(
        self,
        name: str,
        *,
        routers: Sequence[APIRouter] = (),
        consumers: Sequence[ConsumerLoop] = (),
        background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
        on_stop: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
    ) -> None:
        self.name = name
        self._routers = list(routers)
        self.consumers = list(consumers)
        self._background = list(background)
        self._on_stop = list(on_stop)
        self._tasks: list[asyncio.Task[None]] = []

    def routers(self) -> Sequence[APIRouter]:
        return self._routers

    async def start(self) -> None:
        for consumer in self.consumers:
            await consumer.start()
        for job in self._background:
            self._tasks.append(asyncio.create_task(job(), name=f"{self.name}:background"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.gather(*(consumer.stop() for consumer in self.consumers))
        for hook in self._on_stop:
            await hook()

    def readiness(self) -> Mapping[str, bool]:
        checks = {f"consumer:{c.group}": c.running for c in self.consumers}
        checks.update({f"task:{i}": not t.done() for i, t in enumerate(self._tasks)})
        return checks
