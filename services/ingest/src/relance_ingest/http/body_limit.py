"""Body limits enforced while streaming, after gzip decoding (a gzip bomb gets 413).

FastAPI reads request bodies without any limit, so this ASGI middleware reads the body
itself, decoding `Content-Encoding: gzip` incrementally with a bounded output per step,
and answers 413 as soon as the decoded size passes the limit of the route. The decoded
body (at most `limit` bytes) is then replayed to the app without the encoding header.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relance_ingest.errors import BadBody, BodyTooLarge
from relance_ingest.settings import IngestSettings

EVENT_PATHS = frozenset(
    {"/v1/identify", "/v1/track", "/v1/alias", "/v1/page", "/v1/screen", "/v1/group"}
)


class LimitedBody:
    """Accumulates decoded bytes up to `limit`; raises `BodyTooLarge` past it."""

    def __init__(self, limit: int, *, gzip: bool) -> None:
        self._limit = limit
        self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if gzip else None
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        if self._inflater is None:
            self._add(chunk)
            return
        data = chunk
        try:
            while data and not self._inflater.eof:
                # max_length bounds the memory a tiny compressed chunk can expand into.
                self._add(self._inflater.decompress(data, self._limit - self._size + 1))
                data = self._inflater.unconsumed_tail
        except zlib.error as exc:
            raise BadBody(f"invalid gzip body: {exc}") from None

    def finish(self) -> bytes:
        if self._inflater is not None and not self._inflater.eof:
            raise BadBody("truncated gzip body")
        return b"".join(self._parts)

    def _add(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            raise BodyTooLarge(f"body larger than {self._limit} bytes")
        if data:
            self._parts.append(data)


def ingest_body_limits(settings: IngestSettings) -> Callable[[str], int | None]:
    """The decoded-body limit for a path, or None for routes this middleware leaves alone."""

    def limit_for(path: str) -> int | None:
        if path == "/v1/batch" or path == "/v1/import":
            return settings.max_batch_bytes
        if path in EVENT_PATHS:
            return settings.max_event_bytes
        if path.startswith("/u/"):
            return settings.max_form_bytes
        return None

    return limit_for


async def _reject(send: Send, status: int, field: str, reason: str) -> None:
    body = orjson.dumps({"errors": [{"field": field, "reason": reason}]})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Mount with `app.add_middleware(BodyLimitMiddleware, limit_for=ingest_body_limits(s))`."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int | None]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        if limit is None:
            await self.app(scope, receive, send)
            return
        encoding = b"identity"
        declared: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-encoding":
                encoding = value.strip().lower()
            elif name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reject(send, 400, "content-length", "not an integer")
                    return
        if encoding not in (b"identity", b"gzip", b"x-gzip"):
            await _reject(send, 415, "content-encoding", "only gzip or identity is accepted")
            return
        gzip = encoding != b"identity"
        if declared is not None and not gzip and declared > limit:
            await _reject(send, 413, "body", f"larger than {limit} bytes")
            return
        body = LimitedBody(limit, gzip=gzip)
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body.feed(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            decoded = body.finish()
        except BodyTooLarge as exc:
            await _reject(send, 413, "body", str(exc))
            return
        except BadBody as exc:
            await _reject(send, 400, "body", str(exc))
            return

        headers = [
            (n, v) for n, v in scope["headers"] if n not in (b"content-encoding", b"content-length")
        ]
        headers.append((b"content-length", str(len(decoded)).encode()))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": decoded, "more_body": False}
            return await receive()

        await self.app({**scope, "headers": headers}, replay, send)
