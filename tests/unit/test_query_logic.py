"""Pure logic of the query service: cursors, parameter checks, scopes, key parsing, key cache, rate limit,
the watchlist record format, and the error body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar import get

from alpr_query import cursor, params
from alpr_query.errors import BadParameter
from alpr_query.events.repository import DETAIL_COLUMNS, SUMMARY_COLUMNS, EventFilter
from alpr_query.events.schemas import EventDetail, EventSummary
from alpr_query.keys.repository import ApiKey, allows, hash_key, new_key, normalise_scopes
from alpr_query.security import KeyCache, RateLimiter, check_route_scopes, presented_key, route_scope
from alpr_query.similarity import similarity, trigrams
from alpr_query.watchlist.publisher import record
from alpr_shared.schemas import Codec, WatchlistEntry

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive; zones come from `timezones`
        max_value=datetime(2299, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    st.text(min_size=1, max_size=80).filter(lambda s: "\x00" not in s),
    st.one_of(st.none(), st.floats(min_value=0, max_value=1, width=32)),
)
def test_cursor_round_trip(first_seen: datetime, event_id: str, score: float | None) -> None:
    position = cursor.Position(first_seen=first_seen, event_id=event_id, score=score)
    encoded = cursor.encode(position, "f1")
    assert cursor.decode(encoded, "f1") == position
    assert "=" not in encoded and "/" not in encoded and "+" not in encoded  # URL-safe as it is


@pytest.mark.parametrize("bad", ["", "x", "!!!", "AAAA", "e30", "W10", "a" * 600])
def test_garbage_cursors_are_a_400_on_cursor(bad: str) -> None:
    with pytest.raises(BadParameter) as raised:
        cursor.decode(bad, "f1")
    assert raised.value.parameter == "cursor"


def test_a_cursor_for_other_filters_is_refused() -> None:
    encoded = cursor.encode(cursor.Position(T0, "e1"), EventFilter(cameras=("a",)).fingerprint())
    with pytest.raises(BadParameter, match="other filters"):
        cursor.decode(encoded, EventFilter(cameras=("b",)).fingerprint())
    assert cursor.decode(encoded, EventFilter(cameras=("a",)).fingerprint()).event_id == "e1"


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("abc-123", "ABC123"), (" kl 55 ab ", "KL55AB"), ("b.m.w.1", "BMW1"), ("x_1", "X1")],
)
def test_plates_are_normalised_like_stored_plates(raw: str, canonical: str) -> None:
    assert params.plate("plate", raw) == canonical


@pytest.mark.parametrize("raw", ["", "---", "AB%C", "ÄB12", "A" * 17, "AB\x00C", "\ud800"])
def test_bad_plates_name_the_parameter(raw: str) -> None:
    with pytest.raises(BadParameter) as raised:
        params.plate("plate", raw)
    assert raised.value.parameter == "plate" and "plate" in str(raised.value.detail)


def test_times_are_utc_and_bounded() -> None:
    naive = params.time("from", datetime(2026, 1, 1, 12))  # noqa: DTZ001 - a naive time is what is tested
    assert naive == datetime(2026, 1, 1, 12, tzinfo=UTC)
    shifted = params.time("from", datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    assert shifted == datetime(2026, 1, 1, 10, tzinfo=UTC)
    for bad in (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))), datetime(2400, 1, 1, tzinfo=UTC)):
        with pytest.raises(BadParameter) as raised:
            params.time("from", bad)
        assert raised.value.parameter == "from"
    with pytest.raises(BadParameter) as raised:
        params.time_range(T0, T0)
    assert raised.value.parameter == "to"


@pytest.mark.parametrize("value", ["", "a\x00b", "tab\there", "x" * 201, "\udcff"])
def test_text_filters_refuse_what_postgres_cannot_take(value: str) -> None:
    with pytest.raises(BadParameter):
        params.text("site", value)


def test_identifiers() -> None:
    assert params.identifier("event_id", "6f1c2d3e-4b5a-4c6d") == "6f1c2d3e-4b5a-4c6d"
    for bad in ("", "-lead", "a b", "a/b", "x" * 201):
        with pytest.raises(BadParameter):
            params.identifier("event_id", bad)


def test_scopes_include_the_ones_below() -> None:
    assert allows(("admin",), "read") and allows(("admin",), "write") and allows(("admin",), "admin")
    assert allows(("write",), "read") and not allows(("write",), "admin")
    assert allows(("read",), "read") and not allows(("read",), "write")
    assert not allows((), "read") and not allows(("root",), "read")
    assert normalise_scopes(["admin", "read"]) == ("read", "admin")
    with pytest.raises(ValueError, match="unknown scope"):
        normalise_scopes(["root"])
    with pytest.raises(ValueError, match="at least one"):
        normalise_scopes([])


def test_every_v1_route_must_declare_a_known_scope() -> None:
    @get("/v1/a", opt={"scope": "write"}, sync_to_thread=False)
    def declared() -> None: ...

    @get("/v1/b", sync_to_thread=False)
    def undeclared() -> None: ...

    @get("/v1/c", opt={"scope": "root"}, sync_to_thread=False)
    def unknown() -> None: ...

    assert route_scope(declared) == "write"
    assert route_scope(undeclared) is None and route_scope(unknown) is None
    check_route_scopes([declared])
    with pytest.raises(ValueError, match=r"undeclared.*unknown"):
        check_route_scopes([declared, undeclared, unknown])


def test_keys_are_random_and_only_their_hash_is_kept() -> None:
    key_id, key = new_key()
    assert key.startswith(f"alpr_{key_id}_") and len(key) > 50
    assert hash_key(key).startswith("sha256:") and key not in hash_key(key)
    assert new_key()[1] != key and hash_key(key) == hash_key(key)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"authorization": "Bearer k1"}, "k1"),
        ({"authorization": "bearer   k1 "}, "k1"),
        ({"authorization": "Basic abc"}, None),
        ({"authorization": "Bearer "}, None),
        ({"x-api-key": " k2"}, "k2"),
        ({"x-api-key": ""}, None),
        ({"authorization": "Bearer k1", "x-api-key": "k2"}, "k1"),
    ],
)
def test_presented_key(headers: dict[str, str], expected: str | None) -> None:
    raw = [(b"host", b"x"), *((k.encode(), v.encode()) for k, v in headers.items())]
    assert presented_key(raw) == expected
    upper = [(k.upper(), v) for k, v in raw]  # header names are case-insensitive
    assert presented_key(upper) == expected


class _Repo:
    def __init__(self) -> None:
        self.calls = 0
        self.valid = {"good": ApiKey("k1", "n", "alpr_k1", ("read",), T0, None, None, None)}

    async def authenticate(self, key: str) -> ApiKey | None:
        self.calls += 1
        return self.valid.get(key)


async def test_key_cache_asks_the_database_once_per_ttl() -> None:
    now = [0.0]
    repo = _Repo()
    cache = KeyCache(repo, ttl_s=10, clock=lambda: now[0])  # type: ignore[arg-type]
    assert (await cache.principal("good")) is not None
    assert (await cache.principal("bad")) is None
    assert (await cache.principal("good")) is not None and (await cache.principal("bad")) is None
    assert repo.calls == 2
    now[0] = 11
    del repo.valid["good"]  # revoked meanwhile
    assert (await cache.principal("good")) is None and repo.calls == 3
    cache.forget()
    await cache.principal("bad")
    assert repo.calls == 4


def test_rate_limiter_token_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, 0]
    wait = limiter.acquire("a")
    assert wait == pytest.approx(0.5)
    assert limiter.acquire("b") == 0  # buckets are per key
    now[0] = 0.5
    assert limiter.acquire("a") == 0 and limiter.acquire("a") > 0
    now[0] = 100
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, 0]  # refilled up to the burst, no more
    assert limiter.acquire("a") > 0
    assert RateLimiter(0, 1).acquire("x") == 0  # off


def test_event_structs_are_built_in_column_order() -> None:
    fields = EventSummary.__struct_fields__
    assert fields[: len(SUMMARY_COLUMNS)] == SUMMARY_COLUMNS and fields[len(SUMMARY_COLUMNS) :] == ("score",)
    assert set(DETAIL_COLUMNS) <= set(EventDetail.__struct_fields__)


def test_watchlist_records_match_what_events_consumes() -> None:
    row = {
        "entry_id": "e-1",
        "plate": "AB123",
        "label": "stolen",
        "match": "fuzzy",
        "max_distance": 2,
        "updated_at": T0,
        "deleted_at": None,
    }
    key, value = record(row)
    assert key == b"e-1" and value is not None
    entry = Codec(WatchlistEntry, wire="json").decode(value)
    assert (entry.entry_id, entry.plate, entry.label, entry.match, entry.max_distance) == (
        "e-1",
        "AB123",
        "stolen",
        "fuzzy",
        2,
    )
    assert entry.updated_at_ns == int(T0.timestamp()) * 10**9 + 123456 * 1000 and not entry.deleted
    assert record({**row, "deleted_at": T0}) == (b"e-1", None)  # a tombstone


def test_trigram_similarity_matches_pg_trgm_values() -> None:
    assert similarity(trigrams("ABC1234"), trigrams("abc1234")) == 1.0
    # Values returned by PostgreSQL 15's pg_trgm similarity() for the same pairs.
    assert similarity(trigrams("AB-12 cd"), trigrams("ab12")) == 0.27272728085517883
    assert similarity(trigrams("ABC012"), trigrams("ABC011")) == 0.5555555820465088
    assert similarity(trigrams("ABC123"), trigrams("ABC001")) == 0.27272728085517883
    assert similarity(trigrams(""), trigrams("A")) == 0.0
    assert trigrams("ab") == frozenset({"  a", " ab", "ab "})
