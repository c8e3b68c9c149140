"""Run a host app under uvicorn: logging, tracing, graceful SIGTERM. Shared by `relance up`,
`relance serve SERVICE` and each service's `python -m relance_<service>` (its Docker image)."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from types import FrameType
from typing import NoReturn

import uvicorn

from relance_runtime.errors import ConfigError
from relance_runtime.host import (
    AppHook,
    ComponentFactory,
    OnReady,
    create_host_app,
    serve_options,
    served_app,
)
from relance_runtime.settings import CommonSettings
from relance_runtime.telemetry import configure_logging, configure_tracing

log = logging.getLogger(__name__)


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
    """Serve until SIGTERM/SIGINT; return whether the server had started (every worker,
    when a hook asked for several processes)."""
    label = "+".join(factories)
    configure_logging(common.log_level, common.log_format, service=label)
    app = create_host_app(
        common, factories, title=f"Relance ({label})", on_ready=on_ready, app_hooks=app_hooks
    )
    config = uvicorn.Config(
        served_app(app),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(common.drain_timeout_s) + 5,
    )
    processes = serve_options(app).processes
    if processes > 1 and len(factories) > 1:
        log.warning(
            "worker processes are for a process running one service; serving from one",
            extra={"services": list(factories), "processes": processes},
        )
        processes = 1
    if processes > 1:
        return _run_workers(common, label, config, processes)
    _configure_tracing(common, label)
    server = GracefulServer(config)
    server.run()  # uvicorn turns SIGTERM/SIGINT into a graceful lifespan shutdown
    return bool(server.started)


def _configure_tracing(common: CommonSettings, label: str) -> None:
    configure_tracing(
        f"relance-{label}", common.otel_exporter, common.otel_endpoint, file=common.otel_file
    )


def _run_workers(common: CommonSettings, label: str, config: uvicorn.Config, count: int) -> bool:
    """Fork `count` workers, each a whole server on its own SO_REUSEPORT socket, and
    supervise them: SIGTERM/SIGINT is passed on to each (each drains and exits 0), and a
    worker that stops on its own stops the others, so the supervisor above restarts us."""
    if not hasattr(socket, "SO_REUSEPORT") or config.port == 0:
        raise ConfigError("several worker processes need SO_REUSEPORT and a fixed port")
    workers: dict[int, int] = {}
    stopping = False

    def stop_all(sig: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    # Installed before forking, so a signal between two forks is not lost.
    previous = {sig: signal.signal(sig, stop_all) for sig in _SIGNALS}
    supervisor = os.getpid()
    try:
        for index in range(count):
            if stopping:  # a signal came while forking: no more workers
                break
            pid = os.fork()
            if pid == 0:
                _worker(common, label, config, index, supervisor)  # never returns
            workers[pid] = index
        log.info("workers started", extra={"processes": count, "pids": sorted(workers)})
        all_clean = True
        while workers:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index = workers.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            all_clean = all_clean and code == 0
            if not stopping:
                log.error(
                    "a worker stopped on its own; stopping the others",
                    extra={"worker": index, "pid": pid, "exit_code": code},
                )
                stop_all()
        return all_clean
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker(
    common: CommonSettings, label: str, config: uvicorn.Config, index: int, supervisor: int
) -> NoReturn:
    code = 1
    try:
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        _exit_with(supervisor)
        _configure_tracing(common, label)
        server = GracefulServer(config)
        server.run(sockets=[_reuseport_socket(config.host, config.port)])
        code = 0 if server.started else 1
    except BaseException:
        log.exception("worker failed", extra={"worker": index})
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        # The supervisor's state (atexit hooks, its children) is not the worker's to run.
        os._exit(code)


def _exit_with(supervisor: int) -> None:
    """Ask Linux for a SIGTERM if the supervisor dies (e.g. SIGKILL): no orphan workers."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != supervisor:
        os._exit(1)


def _reuseport_socket(host: str, port: int) -> socket.socket:
    """A socket of its own per worker: the kernel spreads connections evenly among them
    (one shared socket lets whichever worker wakes first take most keep-alive clients)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


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
