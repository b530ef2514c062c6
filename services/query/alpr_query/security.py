"""Who may call `/v1`: API-key authentication, scopes, and a per-key rate limit.

- Every `/v1` request carries a key, as `Authorization: Bearer <key>` or `X-API-Key: <key>` (never in the
  URL, which proxies and access logs record). No key, or an unknown, revoked or expired one → 401.
- Each route needs a scope (`read` < `write` < `admin`, each including the ones before it), declared as
  `opt={"scope": …}` on its handler; a valid key without it → 403. A `/v1` route that declares none is
  refused when the app is built (`check_route_scopes`) and, should one slip through, answered 403.
- A key that passed is trusted for `query.key_cache_s` (a revocation bites within that time) so the
  database is not asked on every request; unknown keys are remembered as unknown for as long.
- Requests per key are limited by a token bucket (`query.rate_limit_per_s`, burst `rate_limit_burst`) in
  this process → 429 with `Retry-After`. Several API replicas each keep their own buckets.

Keys are never logged: only the key id appears in logs and metrics labels never carry it at all.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from alpr_query.keys.repository import SCOPES, ApiKey, KeyRepository, allows

# Unknown keys are cached too (so a client retrying a bad key does not hit the database each time);
# the cache holds at most this many entries, oldest dropped first.
KEY_CACHE_ENTRIES = 10_000
RATE_BUCKETS = 100_000
_BEARER = "bearer "


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a valid API key."""

    key_id: str
    name: str
    scopes: tuple[str, ...]


class KeyCache:
    """Validated keys by their value, each for `ttl_s`."""

    def __init__(self, repository: KeyRepository, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.repository = repository
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: OrderedDict[str, tuple[Principal | None, float]] = OrderedDict()

    def __deepcopy__(self, memo: dict[int, Any]) -> KeyCache:
        # Litestar deep-copies a router (and its middleware arguments) when it is registered; the cache
        # and its pool are shared runtime state, not configuration, so every copy is this same object.
        return self

    async def principal(self, key: str) -> Principal | None:
        now = self.clock()
        cached = self._entries.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        found = await self.repository.authenticate(key)
        principal = None if found is None else _principal(found)
        if self.ttl_s > 0:
            self._entries[key] = (principal, now + self.ttl_s)
            self._entries.move_to_end(key)
            while len(self._entries) > KEY_CACHE_ENTRIES:
                self._entries.popitem(last=False)
        return principal

    def forget(self) -> None:
        """Drop every cached key (after a revocation through the API, so it bites at once here)."""
        self._entries.clear()


def _principal(key: ApiKey) -> Principal:
    return Principal(key_id=key.key_id, name=key.name, scopes=key.scopes)


class RateLimiter:
    """A token bucket per key id: `rate_per_s` tokens a second, at most `burst` saved up."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key id → (tokens, time)

    def __deepcopy__(self, memo: dict[int, Any]) -> RateLimiter:
        return self  # shared state, see KeyCache.__deepcopy__

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, key_id: str) -> float:
        """Take one token; returns 0 when allowed, else the seconds until a token is available."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        tokens, last = self._buckets.get(key_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key_id] = (tokens - 1.0, now)
            self._buckets.move_to_end(key_id)
            if len(self._buckets) > RATE_BUCKETS:
                self._buckets.popitem(last=False)
            return 0.0
        self._buckets[key_id] = (tokens, now)
        return (1.0 - tokens) / self.rate


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key of a request (raw ASGI headers), from `Authorization: Bearer …` or `X-API-Key`; None when
    there is none. Reads the raw header list: building Litestar's `Headers` cost more than the rest of the
    authentication."""
    authorization: bytes | None = None
    api_key: bytes | None = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"authorization" and authorization is None:
            authorization = value
        elif lowered == b"x-api-key" and api_key is None:
            api_key = value
    if authorization:
        text = authorization.decode("latin-1")
        if text[: len(_BEARER)].lower() == _BEARER:
            return text[len(_BEARER) :].strip() or None
        return None
    if api_key:
        return api_key.decode("latin-1").strip() or None
    return None


def route_scope(handler: BaseRouteHandler) -> str | None:
    """The scope a route needs (`opt={"scope": …}` on its handler); None when it declares none."""
    scope = handler.opt.get("scope")
    return scope if scope in SCOPES else None


def check_route_scopes(handlers: Iterable[BaseRouteHandler]) -> None:
    """Refuse to build an API with a `/v1` route that declares no scope (it would answer 403 to every key)."""
    missing = [h.handler_name for h in handlers if route_scope(h) is None]
    if missing:
        raise ValueError(f"these /v1 route handlers declare no scope (opt={{'scope': ...}}): {missing}")


class ApiKeyMiddleware:
    """Authenticates `/v1` requests, applies the rate limit and the route's scope; sets `scope["user"]`
    (`request.user`) to a `Principal`.

    A plain ASGI middleware rather than Litestar's `AbstractAuthenticationMiddleware` + route guards:
    Litestar copies the route handler object for every guard call (`copy(self)` in `authorize_connection`),
    which with the base class's connection object cost ~15 µs a request, a third of the API layer's CPU
    on a plate look-up. The checks and their order are unchanged: no or bad key → 401, over the rate
    limit → 429, key without the route's scope → 403. Errors raised here go through the app's exception
    handlers like any other (Litestar wraps every middleware in its exception middleware)."""

    def __init__(self, app: ASGIApp, keys: KeyCache, limiter: RateLimiter) -> None:
        # Mounted on the /v1 router only (health, metrics and docs are public).
        self.app = app
        self.keys = keys
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # CORS preflights carry no key (browsers never send one); the CORS middleware answers them.
        if scope["type"] == ScopeType.HTTP and scope["method"] != "OPTIONS":
            scope["user"] = await self.authorize(scope)
        await self.app(scope, receive, send)

    async def authorize(self, scope: Scope) -> Principal:
        key = presented_key(scope["headers"])
        if key is None:
            raise NotAuthorizedException(
                detail="an API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key'",
                headers={"WWW-Authenticate": 'Bearer realm="alpr"'},
            )
        principal = await self.keys.principal(key) if len(key) <= 200 else None
        if principal is None:
            raise NotAuthorizedException(
                detail="the API key is unknown, expired or revoked",
                headers={"WWW-Authenticate": 'Bearer realm="alpr", error="invalid_token"'},
            )
        wait_s = self.limiter.acquire(principal.key_id)
        if wait_s > 0:
            raise TooManyRequestsException(
                detail=f"rate limit of this API key exceeded ({self.limiter.rate:g} requests/s)",
                headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
            )
        needed = route_scope(scope["route_handler"])
        if needed is None:  # check_route_scopes keeps this from happening; refuse rather than allow
            raise PermissionDeniedException(detail="this route declares no scope")
        if not allows(principal.scopes, needed):
            raise PermissionDeniedException(
                detail=f"this route needs the {needed!r} scope; the key has {list(principal.scopes)}"
            )
        return principal
