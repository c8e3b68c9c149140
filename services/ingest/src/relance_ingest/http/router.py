"""`build_router(deps)`: the Segment-compatible API, tracking pixel and links, unsubscribe."""

from __future__ import annotations

import html
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBasic
from starlette.requests import HTTPConnection

from relance_events.segment_spec import MessageType
from relance_ingest.http.deps import IngestDeps
from relance_ingest.http.schemas import (
    ALIAS,
    EVENT_RESPONSES,
    IDENTIFY,
    PAGE,
    TRACK,
    ErrorBody,
    Success,
    batch_schema,
    json_body,
)
from relance_ingest.http.segment import BATCH_ROUTE, SegmentEndpoint
from relance_runtime.auth import parse_basic_auth
from relance_runtime.errors import BusUnavailable

__all__ = ["IngestDeps", "build_router"]

PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_NO_STORE = {"Cache-Control": "no-store, max-age=0"}

RequestHandler = Callable[[Request], Coroutine[Any, Any, Response]]


class _WriteKey(HTTPBasic):
    """Documents Basic auth in OpenAPI; answers with the key (username) or None, never raises."""

    async def __call__(self, request: HTTPConnection) -> str | None:  # type: ignore[override]
        return parse_basic_auth(request.headers.get("authorization"))


def _errors(status: int, errors: list[dict[str, Any]], **headers: str) -> JSONResponse:
    return JSONResponse({"errors": errors}, status_code=status, headers=headers or None)


def build_router(deps: IngestDeps) -> APIRouter:
    settings = deps.settings
    router = APIRouter()
    write_key = _WriteKey(auto_error=False, description="The write key as username.")

    def single(path: str, kind: MessageType, schema: dict[str, Any], summary: str) -> None:
        async def endpoint(request: Request, key: str | None = Security(write_key)) -> Response:
            """What OpenAPI documents; requests are served by the `SegmentEndpoint`."""
            raise AssertionError("served by the SegmentEndpoint")  # pragma: no cover

        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            summary=summary,
            description=f"{summary}. At most {settings.max_event_bytes} bytes (decoded).",
            response_model=Success,
            responses=EVENT_RESPONSES,
            openapi_extra=json_body(schema),
            operation_id=f"segment_{kind}",
            tags=["events"],
            route_class_override=_direct(SegmentEndpoint(deps, kind)),
        )

    single("/v1/identify", "identify", IDENTIFY, "Identify a contact (traits, consent)")
    single("/v1/track", "track", TRACK, "Track an event (e-commerce spec v2 or custom)")
    single("/v1/alias", "alias", ALIAS, "Merge a previous id into a user id")
    single("/v1/page", "page", PAGE, "A page view")

    async def batch(request: Request, key: str | None = Security(write_key)) -> Response:
        raise AssertionError("served by the SegmentEndpoint")  # pragma: no cover

    router.add_api_route(
        BATCH_ROUTE,
        batch,
        methods=["POST"],
        summary="Several messages at once",
        description=(
            f"At most {settings.max_batch_events} messages, {settings.max_batch_bytes} bytes "
            f"per call and {settings.max_event_bytes} bytes per message (decoded; gzip "
            "accepted). All or nothing: 200 only once every event is acknowledged by the bus."
        ),
        response_model=Success,
        responses=EVENT_RESPONSES,
        openapi_extra=json_body(batch_schema(settings.max_batch_events)),
        operation_id="segment_batch",
        tags=["events"],
        route_class_override=_direct(SegmentEndpoint(deps, None)),
    )

    @router.get(
        "/t/o/{token}.gif",
        response_class=Response,
        responses={200: {"content": {"image/gif": {}}, "description": "Always a 1x1 GIF."}},
        tags=["tracking"],
        operation_id="tracking_open",
    )
    async def pixel(token: str) -> Response:
        await deps.tracking.opened(token, deps.clock.now())
        return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)

    @router.get(
        "/t/c/{token}",
        response_class=Response,
        status_code=302,
        responses={
            302: {"description": "Redirect to the URL inside the signed token."},
            400: {"model": ErrorBody, "description": "Bad or tampered token."},
        },
        tags=["tracking"],
        operation_id="tracking_click",
    )
    async def click(token: str) -> Response:
        result = await deps.tracking.clicked(token, deps.clock.now())
        if result is None:
            return _errors(400, [{"field": "token", "reason": "invalid link"}])
        return RedirectResponse(result.url, status_code=302, headers=_NO_STORE)

    @router.get(
        "/u/{token}",
        response_class=HTMLResponse,
        responses={400: {"content": {"text/html": {}}, "description": "Bad token."}},
        tags=["unsubscribe"],
        operation_id="unsubscribe_page",
    )
    async def unsubscribe_page(token: str) -> HTMLResponse:
        # Link scanners prefetch GETs, so this page changes nothing by itself.
        claims = deps.tracking.unsubscribe_claims(token)
        if claims is None:
            return HTMLResponse(_page("This link is not valid.", None), status_code=400)
        channel = "SMS" if claims["ch"] == "sms" else "email"
        text = f"Stop receiving marketing {channel} messages?"
        return HTMLResponse(_page(text, f"/u/{token}"), headers=_NO_STORE)

    @router.post(
        "/u/{token}",
        responses={
            200: {"model": Success, "description": "Unsubscribed (idempotent)."},
            400: {"model": ErrorBody, "description": "Bad token or body."},
            503: {"model": ErrorBody, "description": "Not recorded; retry."},
        },
        openapi_extra={"requestBody": _unsubscribe_body()},
        tags=["unsubscribe"],
        operation_id="unsubscribe_one_click",
    )
    async def unsubscribe(token: str, request: Request) -> Response:
        try:
            form = await request.form(max_files=0, max_fields=16)
            value = form.get("List-Unsubscribe")
        except Exception:  # any malformed form is the client's fault, never a 5xx
            value = None
        if value != "One-Click":
            reason = "body must be List-Unsubscribe=One-Click"
            return _errors(400, [{"field": "List-Unsubscribe", "reason": reason}])
        try:
            done = await deps.tracking.unsubscribe(token, deps.clock.now())
        except BusUnavailable:
            retry = str(settings.bus_retry_after_s)
            reason = "not recorded yet, please retry"
            return _errors(503, [{"field": "", "reason": reason}], **{"Retry-After": retry})
        if not done:
            return _errors(400, [{"field": "token", "reason": "invalid link"}])
        return JSONResponse({"success": True}, headers=_NO_STORE)

    return router


def _direct(segment: SegmentEndpoint) -> type[APIRoute]:
    """A route documented from its endpoint's signature but served by `segment`.

    In a running server `IngestFront` answers these paths before FastAPI; this keeps the
    framework's path (tests, apps built without the front) answering the same.
    """

    async def handler(request: Request) -> Response:
        answer = await segment.answer(request.scope["headers"], request.receive)
        if answer is None:  # the client went away
            return Response(status_code=400)
        return Response(
            answer.body,
            status_code=answer.status,
            headers={k.decode(): v.decode() for k, v in answer.headers},
            media_type="application/json",
        )

    class DirectRoute(APIRoute):
        def get_route_handler(self) -> RequestHandler:
            return handler

    return DirectRoute


def _unsubscribe_body() -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["List-Unsubscribe"],
        "properties": {"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}},
    }
    return {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {"schema": schema},
            "multipart/form-data": {"schema": schema},
        },
    }


def _page(text: str, action: str | None) -> str:
    button = (
        f'<form method="post" action="{html.escape(action)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
        if action
        else ""
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title>'
        '<meta name="viewport" content="width=device-width"></head>'
        f"<body><p>{html.escape(text)}</p>{button}</body></html>"
    )
