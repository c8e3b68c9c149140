"""Run a host app under uvicorn: logging, tracing, graceful SIGTERM. Shared by `relance up`,
`relance serve SERVICE` and each service's `python -m relance_<service>` (its Docker image)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence

import uvicorn

from relance_runtime.host import AppHook, ComponentFactory, OnReady, create_host_app
from relance_runtime.settings import CommonSettings
from relance_runtime.telemetry import configure_logging, configure_tracing


class GracefulServer(uvicorn.Server):
    """Exits 0 once a SIGTERM/SIGINT drain completed.

    uvicorn re-raises the captured signal after shutting down (exit status 143); a clean
    drain is a success here, so supervisors can tell it from a crash.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run(
    common: CommonSettings,
    factories: Mapping[str, ComponentFactory],
    *,
    host: str,
    port: int,
    app_hooks: Sequence[AppHook] = (),
    on_ready: OnReady | None = None,
) -> bool:
    """Serve until SIGTERM/SIGINT; return whether the server had started."""
    label = "+".join(factories)
    configure_logging(common.log_level, common.log_format, service=label)
    configure_tracing(
        f"relance-{label}", common.otel_exporter, common.otel_endpoint, file=common.otel_file
    )
    app = create_host_app(
        common, factories, title=f"Relance ({label})", on_ready=on_ready, app_hooks=app_hooks
    )
    server = GracefulServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(common.drain_timeout_s) + 5,
        )
    )
    server.run()  # uvicorn turns SIGTERM/SIGINT into a graceful lifespan shutdown
    return bool(server.started)


def standalone_settings() -> CommonSettings:
    """A service run on its own defaults to Kafka (RELANCE_BUS overrides)."""
    common = CommonSettings()
    if "RELANCE_BUS" not in os.environ:
        common = common.model_copy(update={"bus": "kafka"})
    return common


def serve_main(name: str, factory: ComponentFactory, hook: AppHook) -> None:
    """Entry point of `python -m relance_<name>`."""
    parser = argparse.ArgumentParser(
        prog=f"python -m relance_{name}",
        description=f"Run the Relance {name} service against Kafka and PostgreSQL "
        "(configured by RELANCE_* environment variables).",
    )
    parser.add_argument("--host", default="0.0.0.0", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (health, API)")
    args = parser.parse_args()
    started = run(
        standalone_settings(), {name: factory}, host=args.host, port=args.port, app_hooks=[hook]
    )
    raise SystemExit(0 if started else 1)
