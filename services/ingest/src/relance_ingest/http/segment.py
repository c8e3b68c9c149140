"""The Segment event routes as plain ASGI apps: the hot path of ingest.

One request costs what it must (auth from a cache, the body read within its limit, the
mapping, the acknowledged publish) and nothing for the framework: no dependency
resolution, no Request/Response objects, no per-request middleware. `IngestFront` serves
them ahead of FastAPI in a running server; FastAPI's routes (which document them in
OpenAPI) call the same apps, so both answer alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import propagate
from starlette.types import ASGIApp, Receive, Scope, Send

from relance_events.segment_spec import MessageType, SegmentValidationError
from relance_ingest.errors import BadBody, BodyTooLarge
from relance_ingest.http.body_limit import LimitedBody
from relance_ingest.http.deps import IngestDeps
from relance_runtime.auth import parse_basic_auth
from relance_runtime.errors import BusUnavailable, TransientError

EVENT_ROUTES: Mapping[str, MessageType] = {
    "/v1/identify": "identify",
    "/v1/track": "track",
    "/v1/alias": "alias",
    "/v1/page": "page",
}
BATCH_ROUTE = "/v1/batch"

_JSON = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")
_SUCCESS = b'{"success":true}'
_SUCCESS_HEADERS = [_JSON, (b"content-length", str(len(_SUCCESS)).encode())]
_UNAUTHORIZED = (b"www-authenticate", b'Basic realm="relance"')
_ENCODINGS = {b"identity": False, b"gzip": True, b"x-gzip": True}


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @classmethod
    def errors(
        cls, status: int, errors: list[dict[str, Any]], *headers: tuple[bytes, bytes]
    ) -> Answer:
        return cls(status, orjson.dumps({"errors": errors}), headers)

    async def send(self, send: Send) -> None:
        if self.status == 200 and not self.headers:
            headers = _SUCCESS_HEADERS
        else:
            headers = [_JSON, (b"content-length", str(len(self.body)).encode()), *self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


_OK = Answer(200, _SUCCESS)


class Credentials:
    """Basic `Authorization` header -> (write key, rate-limit bucket), parsed once per header.

    Parsing is a pure function of the header, so this caches no decision: every request's
    key is still checked by the key store. Buckets are named by the key's digest.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._parsed: dict[bytes, tuple[str, str] | None] = {}
        self._max = max_entries

    def parse(self, authorization: bytes | None) -> tuple[str, str] | None:
        if authorization is None:
            return None
        try:
            return self._parsed[authorization]
        except KeyError:
            pass
        key = parse_basic_auth(authorization.decode("latin-1"))
        parsed = None if key is None else (key, hashlib.sha256(key.encode()).hexdigest())
        if len(self._parsed) >= self._max:
            self._parsed.clear()
        self._parsed[authorization] = parsed
        return parsed


class SegmentEndpoint:
    """`POST /v1/{identify,track,alias,page}` (`kind` set) or `/v1/batch` (`kind` None).

    The checks run in the order the framework path always had: encoding (415), size
    (413, while streaming and after gzip), then the key (401), the rate limit (429), the
    JSON and the messages (400), and last the acknowledged publish (200, or 503).
    """

    def __init__(
        self, deps: IngestDeps, kind: MessageType | None, credentials: Credentials | None = None
    ) -> None:
        self._deps = deps
        self._kind = kind
        self._credentials = credentials or Credentials()
        settings = deps.settings
        self._limit = settings.max_event_bytes if kind is not None else settings.max_batch_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = await self.answer(scope["headers"], receive)
        if answer is not None:
            await answer.send(send)

    async def answer(self, headers: list[tuple[bytes, bytes]], receive: Receive) -> Answer | None:
        """The response, or None when the client went away while sending the body."""
        authorization = encoding = length = traceparent = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value
            elif name == b"content-encoding":
                encoding = value.strip().lower()
            elif name == b"traceparent":
                traceparent = value
        gzip = _ENCODINGS.get(encoding or b"identity")
        if gzip is None:
            return _reject(415, "content-encoding", "only gzip or identity is accepted")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return _reject(400, "content-length", "not an integer")
            if not gzip and declared > self._limit:
                return _reject(413, "body", f"larger than {self._limit} bytes")
        reader = LimitedBody(self._limit, gzip=gzip)
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                reader.feed(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            raw = reader.finish()
        except BodyTooLarge as exc:
            return _reject(413, "body", str(exc))
        except BadBody as exc:
            return _reject(400, "body", str(exc))
        if traceparent is None:
            return await self._accept(authorization, raw)
        # The caller's trace (W3C traceparent) continues into ingest and downstream.
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        token = otel_context.attach(propagate.extract(carrier))
        try:
            return await self._accept(authorization, raw)
        finally:
            otel_context.detach(token)

    async def _accept(self, authorization: bytes | None, raw: bytes) -> Answer:
        deps, settings, kind = self._deps, self._deps.settings, self._kind
        credentials = self._credentials.parse(authorization)
        if credentials is None:
            return _unauthorized("missing or malformed Basic authorization (key as username)")
        key, bucket = credentials
        shop_id = await deps.keys.shop_for("write", key)
        if shop_id is None:
            return _unauthorized("unknown write key")
        decision = deps.limiter.take(bucket, 1, deps.monotonic())
        if not decision.allowed:
            return _rate_limited(decision.retry_after_s)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return Answer.errors(400, [{"field": "body", "reason": f"malformed JSON: {exc}"}])
        messages: list[tuple[MessageType | None, object]]
        if kind is None:
            batch = data.get("batch") if isinstance(data, dict) else None
            if not isinstance(batch, list) or not batch:
                reason = "a non-empty array is required"
                return Answer.errors(400, [{"field": "batch", "reason": reason}])
            if len(batch) > settings.max_batch_events:
                reason = f"at most {settings.max_batch_events} events per call"
                return Answer.errors(400, [{"field": "batch", "reason": reason}])
            most = settings.max_event_bytes
            # Each item's JSON is part of the batch's: only a batch over the limit can
            # hold an item over it (one call instead of one per item).
            if len(orjson.dumps(batch)) > most:
                oversize = [
                    {"index": i, "field": "", "reason": f"over {most} bytes"}
                    for i, item in enumerate(batch)
                    if len(orjson.dumps(item)) > most
                ]
                if oversize:
                    return Answer.errors(413, oversize)
            messages = [(None, item) for item in batch]
            if len(batch) > 1:
                decision = deps.limiter.take(bucket, len(batch) - 1, deps.monotonic())
                if not decision.allowed:
                    return _rate_limited(decision.retry_after_s)
        else:
            messages = [(kind, data)]
        try:
            await deps.ingest.accept(shop_id, messages, deps.clock.now())
        except SegmentValidationError as exc:
            if kind is not None:
                return Answer.errors(
                    400, [{k: v for k, v in e.items() if k != "index"} for e in exc.errors]
                )
            return Answer.errors(400, exc.errors)
        except TransientError as exc:  # the bus, or the cart store's database
            retry = str(max(1, int(exc.retry_after_s or settings.bus_retry_after_s)))
            what = "event bus" if isinstance(exc, BusUnavailable) else "database"
            reason = f"the {what} is unavailable; none of the events were accepted"
            return Answer.errors(
                503, [{"field": "", "reason": reason}], (b"retry-after", retry.encode())
            )
        return _OK


def segment_endpoints(deps: IngestDeps) -> dict[str, SegmentEndpoint]:
    """Path -> app, for every Segment route ingest serves."""
    credentials = Credentials()
    endpoints = {
        path: SegmentEndpoint(deps, kind, credentials) for path, kind in EVENT_ROUTES.items()
    }
    endpoints[BATCH_ROUTE] = SegmentEndpoint(deps, None, credentials)
    return endpoints


class IngestFront:
    """Serves `POST` on the Segment routes directly, and everything else through `app`.

    `endpoints` is asked on each request until it answers: routes exist only once the
    host has built the ingest component (in the app's lifespan).
    """

    def __init__(self, app: ASGIApp, endpoints: Callable[[], Mapping[str, ASGIApp]]) -> None:
        self._app = app
        self._endpoints = endpoints
        self._table: Mapping[str, ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            if not self._table:
                self._table = self._endpoints()
            endpoint = self._table.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self._app(scope, receive, send)


def _reject(status: int, field_name: str, reason: str) -> Answer:
    """Refused before the body was read in full: the connection cannot be reused."""
    return Answer.errors(status, [{"field": field_name, "reason": reason}], _CLOSE)


def _unauthorized(reason: str) -> Answer:
    return Answer.errors(401, [{"field": "authorization", "reason": reason}], _UNAUTHORIZED)


def _rate_limited(retry_after_s: int) -> Answer:
    reason = "rate limit of this write key; nothing was accepted"
    return Answer.errors(
        429, [{"field": "", "reason": reason}], (b"retry-after", str(retry_after_s).encode())
    )
