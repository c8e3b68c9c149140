"""The FastAPI host: one app per process, serving one service or all five (`relance up`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRouter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from relance_runtime.auth import install_auth_handler
from relance_runtime.gc_tuning import parse_thresholds, tune_gc
from relance_runtime.platform import Platform, start_platform
from relance_runtime.settings import CommonSettings

log = logging.getLogger(__name__)


class ServiceComponent(Protocol):
    """What a service contributes to a process: HTTP routes and background work."""

    name: str

    def routers(self) -> Sequence[APIRouter]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def readiness(self) -> Mapping[str, bool]: ...


ComponentFactory = Callable[[Platform], ServiceComponent]
# Runs when the app is created, before it starts: where ASGI middleware must be added.
AppHook = Callable[[FastAPI], None]
# Runs once every component started (e.g. `relance up` prints where things are).
OnReady = Callable[[Platform, Sequence[ServiceComponent]], Awaitable[None]]
# Wraps the app as served, e.g. to answer hot routes before the framework sees them.
Front = Callable[[ASGIApp], ASGIApp]


@dataclass
class ServeOptions:
    """How `serve.run` serves an app; an `AppHook` adjusts them with `serve_options(app)`.

    `processes` > 1 serves a process that runs one service from that many worker processes
    sharing its port (for stateless services). `fronts` wrap the app, the last outermost.
    """

    processes: int = 1
    fronts: list[Front] = field(default_factory=list)


def serve_options(app: FastAPI) -> ServeOptions:
    options: ServeOptions | None = getattr(app.state, "serve_options", None)
    if options is None:
        options = ServeOptions()
        app.state.serve_options = options
    return options


def served_app(app: FastAPI) -> ASGIApp:
    """The app as a server runs it: wrapped by the fronts its hooks registered."""
    served: ASGIApp = app
    for front in serve_options(app).fronts:
        served = front(served)
    return served


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    for error in exc.errors():
        location = [str(p) for p in error.get("loc", ()) if p != "body"]
        errors.append({"field": ".".join(location) or "body", "reason": error.get("msg", "")})
    return errors


def create_host_app(
    common: CommonSettings,
    factories: Mapping[str, ComponentFactory],
    *,
    title: str = "Relance",
    on_ready: OnReady | None = None,
    app_hooks: Sequence[AppHook] = (),
) -> FastAPI:
    """An app whose lifespan starts the platform, then each component, and stops them in
    reverse order on shutdown (uvicorn turns SIGTERM into that shutdown)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        platform = await start_platform(common, client_id="relance-" + "-".join(factories))
        components: list[ServiceComponent] = []
        try:
            for name, factory in factories.items():
                component = factory(platform)
                for router in component.routers():
                    app.include_router(router)
                components.append(component)
                log.info("component built", extra={"component": name})
            for component in components:
                await component.start()
            app.state.platform = platform
            app.state.components = components
            tune_gc(parse_thresholds(common.gc_thresholds))
            if on_ready is not None:
                await on_ready(platform, components)
            yield
        finally:
            for component in reversed(components):
                try:
                    await component.stop()
                except Exception:
                    log.exception("component failed to stop", extra={"component": component.name})
            await platform.stop()

    app = FastAPI(title=title, lifespan=lifespan, version="0.1.0")
    install_auth_handler(app)
    for hook in app_hooks:
        hook(app)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"errors": validation_errors(exc)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail: Any = exc.detail
        body = detail if isinstance(detail, dict) else {"errors": [{"reason": detail}]}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.get("/healthz", tags=["ops"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Database, bus and consumers are usable")
    async def readyz(request: Request) -> JSONResponse:
        platform: Platform | None = getattr(request.app.state, "platform", None)
        if platform is None:
            return JSONResponse({"ready": False, "checks": {}}, status_code=503)
        checks: dict[str, bool] = dict(await platform.ready())
        for component in request.app.state.components:
            for key, ok in component.readiness().items():
                checks[f"{component.name}.{key}"] = ok
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    return app
