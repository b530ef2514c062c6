"""The query API as one Litestar application: `create_app(settings, pool=...)`.

Owns the wiring only: repositories over one asyncpg pool, the route handlers of each domain (events,
plates, cameras, stats, watchlist, keys), API-key authentication and rate limiting, CORS, the request
size limit, the error format, request metrics, health and the OpenAPI docs (`/docs`, schema at
`/docs/openapi.json`). SQL lives in each domain's `repository` module, never in a handler.

Pool ownership: with `pool=` the caller owns the pool (the service, tests, `alpr run`'s supervisor) and
the app never closes it; without, the app creates one from `database.url` at startup and closes it at
shutdown. Any DSN asyncpg takes works, including a unix socket
(`postgresql://postgres@/alpr?host=/path/to/socket-dir`, the embedded pgserver's).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import asyncpg
from litestar import Litestar, MediaType, Response, Router, get
from litestar.config.cors import CORSConfig
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram

from alpr_query import errors
from alpr_query.cameras import routes as camera_routes
from alpr_query.cameras.repository import CameraRepository
from alpr_query.db import Database, open_pool
from alpr_query.events import routes as event_routes
from alpr_query.events.repository import EventRepository
from alpr_query.keys import routes as key_routes
from alpr_query.keys.repository import KeyRepository
from alpr_query.plates import routes as plate_routes
from alpr_query.plates.repository import PlateRepository
from alpr_query.security import ApiKeyMiddleware, KeyCache, RateLimiter, check_route_scopes
from alpr_query.stats import routes as stats_routes
from alpr_query.stats.repository import StatsRepository
from alpr_query.watchlist import routes as watchlist_routes
from alpr_query.watchlist.publisher import WatchlistPublisher
from alpr_query.watchlist.repository import WatchlistRepository
from alpr_shared.logging import get_logger
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.settings import AlprSettings

log = get_logger("alpr.query")

READY_TIMEOUT_S = 2.0
SECURITY: list[dict[str, list[str]]] = [{"bearerKey": []}, {"headerKey": []}]


# Swagger UI's scripts and styles come from the `swagger-ui-bundle` package, served by the app itself:
# Litestar's default loads them from a CDN, and the docs page stayed blank on an offline site.
SWAGGER_ASSETS = "/docs/assets"


def _swagger_assets() -> Router:
    import swagger_ui_bundle  # noqa: PLC0415 - only the app factory needs it

    return create_static_files_router(
        path=SWAGGER_ASSETS, directories=[swagger_ui_bundle.swagger_ui_path], include_in_schema=False
    )


def _version() -> str:
    try:
        return version("alpr-platform")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        return "0"


@dataclass
class QueryState:
    """What the app holds between requests (in `app.state.query`)."""

    settings: AlprSettings
    db: Database
    owns_pool: bool
    events: EventRepository
    publisher: WatchlistPublisher
    keys: KeyCache
    metrics: ServiceMetrics
    retry_task: asyncio.Task[None] | None = None
    stopping: asyncio.Event | None = None


class RequestMetrics:
    """ASGI middleware: request count and latency per route template (never a concrete path: ids and
    plates stay out of labels) and, if `query.access_log`, one log line per request."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, access_log: bool) -> None:
        self.app = app
        self.access_log = access_log
        self.requests = metrics.counter(
            "http_requests_total", "HTTP requests answered", ["method", "route", "status"]
        )
        self.seconds = metrics.histogram("http_request_seconds", "Time to answer a request", ["route"])
        # Labelled children by label values (bounded: methods × route templates × status codes); looking
        # them up through `labels()` on every request costs more than the rest of this middleware.
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._histograms: dict[str, Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "?"))
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except HTTPException as exc:
            status = exc.status_code
            raise
        finally:
            elapsed = time.perf_counter() - started
            handler = scope.get("route_handler")
            paths = getattr(handler, "paths", None)
            route = next(iter(paths)) if paths else "unmatched"
            counter = self._counters.get((method, route, status))
            if counter is None:
                counter = self._counters[(method, route, status)] = self.requests.labels(
                    method, route, str(status)
                )
            counter.inc()
            histogram = self._histograms.get(route)
            if histogram is None:
                histogram = self._histograms[route] = self.seconds.labels(route)
            histogram.observe(elapsed)
            if self.access_log:
                user = scope.get("user")
                log.info(
                    "request",
                    method=method,
                    route=route,
                    status=status,
                    ms=round(elapsed * 1000, 2),
                    key_id=getattr(user, "key_id", None),
                )


def _health_handlers(state_of: Callable[[], QueryState]) -> list[Any]:
    @get("/health/live", include_in_schema=False, media_type=MediaType.TEXT, sync_to_thread=False)
    def live() -> str:
        return "live\n"

    @get("/health/ready", include_in_schema=False, media_type=MediaType.TEXT)
    async def ready() -> Response[str]:
        state = state_of()
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await state.db.pool.fetchval("SELECT 1 FROM plate_events LIMIT 1")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return Response(
                f"database: {type(exc).__name__}: {exc}\n", status_code=503, media_type=MediaType.TEXT
            )
        return Response("ready\n", media_type=MediaType.TEXT)

    @get("/metrics", include_in_schema=False, media_type=CONTENT_TYPE_LATEST, sync_to_thread=False)
    def metrics() -> Response[bytes]:
        return Response(state_of().metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return [live, ready, metrics]


def create_app(
    settings: AlprSettings,
    *,
    pool: asyncpg.Pool | None = None,
    metrics: ServiceMetrics | None = None,
) -> Litestar:
    """The query API. `pool`: a connected pool the caller owns (else the app opens and closes its own)."""
    query = settings.query
    owns_pool = pool is None
    db = Database(pool)
    metrics = metrics if metrics is not None else ServiceMetrics("query")
    key_repo = KeyRepository(db)
    key_cache = KeyCache(key_repo, query.key_cache_s)
    limiter = RateLimiter(query.rate_limit_per_s, query.rate_limit_burst)
    events = EventRepository(db, fuzzy_scan_limit=query.fuzzy_scan_limit)
    watchlist_repo = WatchlistRepository(db)
    publisher = WatchlistPublisher(
        watchlist_repo,
        settings.kafka,
        metrics,
        enabled=query.watchlist_publish,
        timeout_s=query.publish_timeout_s,
        interval_s=query.republish_interval_s,
    )
    state = QueryState(
        settings=settings,
        db=db,
        owns_pool=owns_pool,
        events=events,
        publisher=publisher,
        keys=key_cache,
        metrics=metrics,
    )

    v1_handlers = [
        *event_routes.handlers(events, query.max_page_size),
        *plate_routes.handlers(PlateRepository(db), query.max_page_size),
        *camera_routes.handlers(CameraRepository(db)),
        *stats_routes.handlers(StatsRepository(db)),
        *watchlist_routes.handlers(watchlist_repo, publisher),
        *key_routes.handlers(key_repo, key_cache),
    ]
    check_route_scopes(v1_handlers)  # the middleware answers 403 to a route without one: refuse it here
    v1 = Router(
        path="/",
        security=SECURITY,
        middleware=[DefineMiddleware(ApiKeyMiddleware, keys=key_cache, limiter=limiter)],
        route_handlers=v1_handlers,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        if owns_pool:
            db.attach(await open_pool(settings))
        try:
            mode = await events.detect_fuzzy_mode(query.fuzzy)
            log.info(
                "query_api_started",
                fuzzy_mode=mode,
                watchlist_publish=query.watchlist_publish,
                rate_limit_per_s=query.rate_limit_per_s,
                cors_origins=len(query.cors_origins),
            )
            stopping = asyncio.Event()
            state.stopping = stopping
            state.retry_task = asyncio.create_task(publisher.run(stopping), name="watchlist-retry")
            try:
                yield
            finally:
                stopping.set()
                await state.retry_task
                await publisher.close()
        finally:
            if owns_pool:
                await db.pool.close()

    cors = (
        CORSConfig(
            allow_origins=list(query.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
        if query.cors_origins
        else None
    )
    app = Litestar(
        route_handlers=[v1, *_health_handlers(lambda: state), _swagger_assets()],
        lifespan=[lifespan],
        middleware=[
            DefineMiddleware(RequestMetrics, metrics=metrics, access_log=query.access_log),
        ],
        exception_handlers={Exception: errors.handle_exception},
        cors_config=cors,
        request_max_body_size=query.max_body_bytes,
        logging_config=None,
        openapi_config=OpenAPIConfig(
            title="ALPR query API",
            version=_version(),
            description=(
                "Plate events stored by the ALPR platform. Every /v1 route needs an API key "
                "(`Authorization: Bearer <key>` or `X-API-Key`; `alpr keys create`)."
            ),
            path="/docs",
            render_plugins=[
                SwaggerRenderPlugin(
                    path="/",
                    js_url=f"{SWAGGER_ASSETS}/swagger-ui-bundle.js",
                    css_url=f"{SWAGGER_ASSETS}/swagger-ui.css",
                    standalone_preset_js_url=f"{SWAGGER_ASSETS}/swagger-ui-standalone-preset.js",
                ),
                JsonRenderPlugin(path="/openapi.json"),
            ],
            components=Components(
                security_schemes={
                    "bearerKey": SecurityScheme(type="http", scheme="bearer", description="API key"),
                    "headerKey": SecurityScheme(
                        type="apiKey", name="X-API-Key", security_scheme_in="header", description="API key"
                    ),
                }
            ),
            use_handler_docstrings=True,
        ),
        debug=False,
    )
    app.state.query = state
    return app


def query_state(app: Litestar) -> QueryState:
    state: QueryState = app.state.query
    return state
