"""structlog configuration: JSON lines in production and when not on a terminal, readable console output
in a terminal. Configured once by the service runtime (or the CLI); importing this module changes nothing.

Log calls use key-value events (`log.info("camera_connected", camera=cam_id)`); secrets never go into them
(`redact_url` strips credentials from camera and database URLs before they are logged).
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO
from urllib.parse import urlsplit, urlunsplit

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    *,
    service: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Set up structlog (and route stdlib logging, e.g. aiokafka's, through the same output)."""
    out = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        # Plain tracebacks: rich's default dumps every local variable, settings included, into the log.
        else structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if use_json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    if service is not None:
        structlog.contextvars.bind_contextvars(service=service)
    # Third-party libraries log through stdlib logging; give them the same format and level floor.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS[level], logging.INFO))


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger


def redact_url(url: str) -> str:
    """`rtsp://user:secret@host/path` → `rtsp://***@host/path`; anything unparsable is fully hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))
