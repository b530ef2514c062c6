"""Service lifecycle: the one runtime every `alpr <service>` process runs in.

`run_service()` owns the process-wide resources — event loop (uvloop), ZeroMQ context, metrics/health HTTP
server, signal handlers — and hands a `ServiceContext` to the service's main coroutine. The service runs
until `ctx.stopping` is set, then finishes its in-flight work and returns.

Signals: SIGTERM/SIGINT set `stopping` (graceful: drain, then exit); the service gets
`shutdown_timeout_s` to return before it is cancelled; a second signal cancels at once. SIGHUP re-reads the
configuration and passes it to the service's reload hooks (a bad file is logged and the old settings kept).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog
import zmq
import zmq.asyncio

from alpr_shared.logging import configure_logging, get_logger
from alpr_shared.metrics import HealthState, ServiceMetrics
from alpr_shared.schemas import _Message
from alpr_shared.settings import AlprSettings, ConfigError, ServiceSettings, load_settings
from alpr_shared.transport import MessageSocket, Mode, Pattern, TransportMetrics, open_socket

T = TypeVar("T", bound=_Message)
ReloadHook = Callable[[AlprSettings], Awaitable[None]]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


@dataclass
class ServiceContext:
    """What a running service may use. It owns none of it: `run_service` opens and closes all of it."""

    name: str
    settings: AlprSettings
    metrics: ServiceMetrics
    zmq_context: zmq.asyncio.Context
    stopping: asyncio.Event
    config_path: Path | None = None
    # CLI overrides, re-applied on every SIGHUP reload so a flag is not lost when the file is re-read.
    overrides: dict[str, Any] = field(default_factory=dict)
    log: structlog.stdlib.BoundLogger = field(default_factory=get_logger)
    _reload_hooks: list[ReloadHook] = field(default_factory=list)
    _transport_metrics: TransportMetrics | None = None

    @property
    def health(self) -> HealthState:
        return self.metrics.health

    @property
    def transport_metrics(self) -> TransportMetrics:
        if self._transport_metrics is None:
            self._transport_metrics = TransportMetrics(self.metrics)
        return self._transport_metrics

    def on_reload(self, hook: ReloadHook) -> None:
        """Register a coroutine to call with the new settings on SIGHUP."""
        self._reload_hooks.append(hook)

    def socket(
        self,
        role: str,
        pattern: Pattern,
        default_mode: Mode,
        message_type: type[T],
        *,
        reliable: bool = False,
    ) -> MessageSocket[T]:
        """Open the socket of an endpoint role (`frames`, `detections`, …) as configured."""
        endpoints = self.settings.endpoints
        hwm = endpoints.frames_hwm if role == "frames" else endpoints.messages_hwm
        return open_socket(
            self.zmq_context,
            name=role,
            pattern=pattern,
            spec=self.settings.endpoint(role),
            default_mode=default_mode,
            message_type=message_type,
            hwm=hwm,
            metrics=self.transport_metrics,
            reliable=reliable,
        )

    def monitor(self, message_type: type[T]) -> MessageSocket[T] | None:
        """A best-effort copy of this service's output for a live viewer (`endpoints.monitor`), or None
        when that endpoint is "" (off). A PUB that connects to the viewer's SUB: with no viewer, or a slow
        one, ZeroMQ drops the copies, so a viewer can never slow the pipeline down."""
        if not self.settings.endpoints.monitor:
            return None
        return self.socket("monitor", "pub", "connect", message_type)


ServiceMain = Callable[[ServiceContext], Coroutine[Any, Any, None]]


def service_settings(settings: AlprSettings, name: str) -> ServiceSettings:
    section: ServiceSettings = getattr(settings.services, name.replace("-", "_"))
    return section


def run_service(
    name: str,
    settings: AlprSettings,
    main: ServiceMain,
    *,
    config_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    metrics_port: int | None = None,
) -> int:
    """Run one service to completion; returns the process exit code."""
    configure_logging(settings.log.level, settings.log.format, service=name)
    log = get_logger("alpr.lifecycle")
    own = service_settings(settings, name)
    metrics = ServiceMetrics(name.replace("-", "_"))
    try:
        port = metrics.serve(own.metrics_host, own.metrics_port if metrics_port is None else metrics_port)
    except OSError as exc:
        log.error("metrics_server_failed", error=str(exc))  # noqa: TRY400 - the message says it all
        return EXIT_FAILED
    log.info("service_starting", metrics=f"http://{own.metrics_host}:{port}/metrics")
    try:
        return _run_loop(
            _supervise(
                name,
                settings=settings,
                main=main,
                metrics=metrics,
                own=own,
                config_path=config_path,
                overrides=overrides or {},
            )
        )
    finally:
        metrics.close()


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    if sys.platform == "win32":  # pragma: no cover - uvloop does not exist there
        return asyncio.run(coro)
    import uvloop  # noqa: PLC0415 - optional on platforms without it

    result: int = uvloop.run(coro)
    return result


async def _supervise(
    name: str,
    *,
    settings: AlprSettings,
    main: ServiceMain,
    metrics: ServiceMetrics,
    own: ServiceSettings,
    config_path: Path | None,
    overrides: dict[str, Any],
) -> int:
    log = get_logger("alpr.lifecycle")
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    zctx = zmq.asyncio.Context()
    ctx = ServiceContext(
        name=name,
        settings=settings,
        metrics=metrics,
        zmq_context=zctx,
        stopping=stopping,
        config_path=config_path,
        overrides=overrides,
    )
    task = asyncio.create_task(main(ctx), name=f"{name}-main")
    reloads: set[asyncio.Task[None]] = set()

    def on_stop_signal(signum: int) -> None:
        if stopping.is_set():
            log.warning("shutdown_forced", signal=signal.Signals(signum).name)
            task.cancel()
            return
        log.info(
            "shutdown_requested", signal=signal.Signals(signum).name, drain_timeout_s=own.shutdown_timeout_s
        )
        stopping.set()

    def on_hup() -> None:
        reload_task = asyncio.create_task(_reload(ctx), name=f"{name}-reload")
        reloads.add(reload_task)
        reload_task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        stop_wait = asyncio.create_task(stopping.wait())
        await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=own.shutdown_timeout_s)
            if not done:
                log.warning("drain_timeout", timeout_s=own.shutdown_timeout_s)
                task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            log.warning("service_cancelled")
            return EXIT_FAILED
        except ConfigError as exc:
            # Raised by a service that finds its (valid) configuration unusable, e.g. no cameras.
            log.error("service_config_error", error=str(exc))  # noqa: TRY400 - the message is the story
            return EXIT_CONFIG
        except Exception:
            log.exception("service_failed")
            return EXIT_FAILED
        log.info("service_stopped")
        return EXIT_OK
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        for pending in list(reloads):
            pending.cancel()
        zctx.destroy(linger=0)


async def _reload(ctx: ServiceContext) -> None:
    log = get_logger("alpr.lifecycle")
    if not ctx._reload_hooks:
        log.info("reload_ignored", reason="this service has nothing to reload")
        return
    try:
        new = load_settings(ctx.config_path, overrides=ctx.overrides)
    except ConfigError as exc:
        log.error("reload_rejected", error=str(exc))  # noqa: TRY400 - the message is the whole story
        return
    ctx.settings = new
    configure_logging(new.log.level, new.log.format, service=ctx.name)
    for hook in ctx._reload_hooks:
        try:
            await hook(new)
        except Exception:
            log.exception("reload_hook_failed", hook=getattr(hook, "__qualname__", repr(hook)))
    log.info("reloaded")
