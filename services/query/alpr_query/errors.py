"""Errors of the REST API: one JSON body for every failure, and the handlers that produce it.

Every error answers `{"status": 400, "error": "bad_request", "detail": "...", "parameter": "limit"}`;
`parameter` names the query/path parameter or body field at fault when there is one. A bad parameter is a
400 that names it, never a 500: the handlers below turn Litestar's validation errors, our own
`BadParameter`, and database errors caused by a value (class 22) into 400s. Database outages and
statement timeouts are 503s (retry later). Anything else is a 500, logged with its traceback; the body
never carries internals. Nothing here logs a request header, so an API key never reaches a log.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from alpr_shared.logging import get_logger

log = get_logger("alpr.query")

_ERROR_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ErrorBody(msgspec.Struct, kw_only=True):
    """What every error response carries."""

    status: int
    error: str
    detail: str
    parameter: str | None = None


class BadParameter(HTTPException):
    """A query/path parameter or body field has a value the API cannot use; `parameter` names it."""

    status_code = 400

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(detail=f"{parameter}: {detail}")
        self.parameter = parameter


class NotFound(HTTPException):
    status_code = 404


class Unavailable(HTTPException):
    status_code = 503


def error_response(
    status: int, detail: str, parameter: str | None = None, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    body = ErrorBody(
        status=status, error=_ERROR_NAMES.get(status, "error"), detail=detail, parameter=parameter
    )
    return Response(content=body, status_code=status, media_type=MediaType.JSON, headers=headers)


def _public_name(request: Request[Any, Any, Any], key: str) -> str:
    """The name a client uses for a handler argument (`since` is the query parameter `from`)."""
    handler = request.scope.get("route_handler")
    signature = getattr(handler, "parsed_fn_signature", None)
    field = signature.parameters.get(key) if signature is not None else None
    definition = getattr(field, "kwarg_definition", None)
    for attribute in ("name", "query"):
        alias = getattr(definition, attribute, None)
        if isinstance(alias, str) and alias:
            return alias
    return key


def _validation_response(request: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    # Litestar puts one {"key", "message", "source"} per bad value in `extra`.
    items = exc.extra if isinstance(exc.extra, list) else []
    parts: list[str] = []
    first_key: str | None = None
    for item in items:
        if not isinstance(item, dict):
            continue
        key = _public_name(request, str(item["key"])) if item.get("key") else None
        message = str(item.get("message") or "invalid value")
        if key is None and item.get("source") == "body":
            key = "body"
        first_key = first_key or key
        parts.append(f"{key}: {message}" if key else message)
    if not parts:
        parts.append(str(exc.detail) or "invalid request")
    return error_response(400, "; ".join(parts), first_key)


def _http_response(exc: HTTPException) -> Response[ErrorBody]:
    status = exc.status_code
    headers = dict(exc.headers) if exc.headers else None
    detail = str(exc.detail) if exc.detail else _ERROR_NAMES.get(status, "error").replace("_", " ")
    if status == 400 and not isinstance(exc, BadParameter) and "body" in detail.lower():
        return error_response(status, detail, "body", headers)
    return error_response(status, detail, getattr(exc, "parameter", None), headers)


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """The app's one exception handler (registered for every exception class)."""
    if isinstance(exc, ValidationException):
        return _validation_response(request, exc)
    if isinstance(exc, HTTPException):
        return _http_response(exc)
    if isinstance(exc, asyncpg.QueryCanceledError | TimeoutError):
        log.warning("query_timeout", route=_route(request), error=type(exc).__name__)
        return error_response(
            503, "the query took too long; narrow the filters or try again", headers=_retry()
        )
    if isinstance(exc, asyncpg.DataError):
        # A value the database refused (out of range, bad text); checks in the handlers catch the usual ones.
        return error_response(400, f"a parameter has a value the database cannot use: {exc}")
    if isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError) or (
        isinstance(exc, asyncpg.PostgresError)
        and str(getattr(exc, "sqlstate", "") or "").startswith(("08", "53", "57"))
    ):
        log.warning("database_unavailable", route=_route(request), error=f"{type(exc).__name__}: {exc}")
        return error_response(503, "the database is unavailable; try again shortly", headers=_retry())
    log.error("request_failed", route=_route(request), exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal error (logged on the server)")


def _retry() -> dict[str, str]:
    return {"Retry-After": "1"}


def _route(request: Request[Any, Any, Any]) -> str:
    # The route template (`/v1/events/{event_id:str}`), never the concrete path: ids and plates stay out.
    handler = request.scope.get("route_handler")
    paths = getattr(handler, "paths", None)
    return next(iter(paths), "?") if paths else "?"


def _spec(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description)


# Documented error answers (OpenAPI) of every /v1 route; handlers add 404 / 409 where they can happen.
V1_RESPONSES: dict[int, ResponseSpec] = {
    400: _spec("A parameter is invalid; `parameter` names it"),
    401: _spec("No API key, or an unknown, expired or revoked one"),
    403: _spec("The API key lacks the scope this route needs"),
    429: _spec("Rate limit of this API key exceeded; see Retry-After"),
    503: _spec("Database unavailable or query too slow; retry later"),
}
NOT_FOUND: dict[int, ResponseSpec] = {404: _spec("No such resource")}
TOO_LARGE: dict[int, ResponseSpec] = {413: _spec("Request body larger than query.max_body_bytes")}
