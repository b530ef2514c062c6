"""Following the watchlist from the database, where no broker carries `alpr.watchlist` (`alpr run`
without --kafka; `events.watchlist_source: database`). Owns one asyncpg connection to `database.url`,
opened lazily, replaced after a failure and closed when `run()` returns. Only reads `watchlist_entries`,
the table the query service writes (its source of truth); never writes to it.

Polling: every `events.watchlist_poll_s` one aggregate query asks for a fingerprint of the table (md5 of
every row's id, plate, label, match, distance, updated_at and deleted_at, in id order). Only when that
differs from the last one are the rows read and the differences applied to the `Watchlist`. Why not "rows
with updated_at newer than the last seen": `updated_at` is `now()`, the start of the writing
transaction, so a change that commits just after a poll can carry a time older than what that poll saw,
and would never be read. The fingerprint sees every committed change, and the table is small (hundreds
to a few thousand entries: hashing it server-side costs about a millisecond and sends one short row).

Rows map to `WatchlistEntry` as the query's publisher maps them to topic records: a row with
`deleted_at` set is a removal (like a tombstone, it also hides a configured entry of the same id); so is
a row that vanished from the table.

Errors: the database down, unreachable or not migrated yet (events starts before persist creates the
schema in `alpr run`) is logged once per outage, counted in `alpr_events_database_errors_total`, and
retried with capped backoff (a missing table at the poll interval); the last known watchlist stays in
force meanwhile. Nothing here raises for a database problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import asyncpg

from alpr_events.watchlist import Watchlist
from alpr_shared.logging import get_logger, redact_url
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import WatchlistEntry, watchlist_entry_from_row

log = get_logger(__name__)

# Retries after a failure back off from the poll interval, doubling up to this cap: an outage of hours
# costs a connection attempt every 10 s, and a database that returns is noticed within that.
RETRY_MAX_S = 10.0
# Closing a connection politely waits for the server; a dead one is terminated after this.
CLOSE_TIMEOUT_S = 2.0

_ROW = "(entry_id, plate, label, match, max_distance, updated_at, deleted_at)"
FINGERPRINT_SQL = (
    f"SELECT md5(coalesce(string_agg({_ROW}::text, ',' ORDER BY entry_id), '')) FROM watchlist_entries"  # noqa: S608 - constant text
)
ROWS_SQL = "SELECT entry_id, plate, label, match, max_distance, updated_at, deleted_at FROM watchlist_entries"


class WatchlistPoller:
    """Keeps the `Watchlist` equal to `watchlist_entries` (over the configured entries)."""

    def __init__(
        self,
        url: str,
        watchlist: Watchlist,
        metrics: ServiceMetrics,
        on_change: Callable[[], None],
        *,
        poll_s: float,
        command_timeout_s: float,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.url = url
        self.watchlist = watchlist
        self.on_change = on_change
        self.poll_s = poll_s
        self.command_timeout_s = command_timeout_s
        self.retry_max_s = max(retry_max_s, poll_s)
        self._conn: asyncpg.Connection | None = None
        self._fingerprint: str | None = None
        # What this poller last applied: entry id → entry, None for a deleted one.
        self._known: dict[str, WatchlistEntry | None] = {}
        self._failing_since: float | None = None
        self._schema_missing = False
        self.records = metrics.counter(
            "watchlist_records_total", "Watchlist changes applied (topic records or table rows)", ["result"]
        )
        self.errors = metrics.counter(
            "database_errors_total", "Failed database operations (retried with backoff)", ["operation"]
        )
        self.caught_up = asyncio.Event()  # set after the first successful load
        self.polls = 0  # successful polls, for tests and logs

    async def run(self, stopping: asyncio.Event) -> None:
        """Poll until `stopping` is set; the connection is closed on return."""
        delay = self.poll_s
        try:
            while not stopping.is_set():
                # After a failure the wait doubles (capped); a success returns to the poll interval. A
                # missing table is a state, not a fault: persist is migrating, look again at the interval.
                ok = await self.poll_once()
                delay = self.poll_s if ok or self._schema_missing else min(delay * 2, self.retry_max_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
        finally:
            await self.close()

    async def poll_once(self) -> bool:
        """One look at the table; True when it answered (changes applied), False after a failure."""
        try:
            changes = await self._changes()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self._failed(exc)
            if not self._schema_missing:  # a missing table leaves the connection fine; anything else may not
                self._drop_connection()
            return False
        self._recovered()
        self.polls += 1
        if changes:
            self.watchlist.apply_many(changes)
            for _, entry in changes:
                self.records.labels("upserted" if entry is not None else "deleted").inc()
            self.on_change()
            log.info("watchlist_changed", changes=len(changes), entries=len(self.watchlist))
        if not self.caught_up.is_set():
            self.caught_up.set()
            log.info("watchlist_loaded", entries=len(self.watchlist), source="database")
        return True

    async def _changes(self) -> list[tuple[str, WatchlistEntry | None]]:
        conn = await self._connection()
        fingerprint = await conn.fetchval(FINGERPRINT_SQL, timeout=self.command_timeout_s)
        if fingerprint == self._fingerprint:
            return []
        # Rows read after the fingerprint are at least as new as it: a change in between is read now and
        # makes the next fingerprint differ again, which costs one more read and loses nothing.
        rows = await conn.fetch(ROWS_SQL, timeout=self.command_timeout_s)
        current = {str(r["entry_id"]): watchlist_entry_from_row(r) for r in rows}
        changes = [(k, e) for k, e in current.items() if k not in self._known or self._known[k] != e]
        # Gone from the table (deleted by hand): removed, like a deleted row.
        changes += [(k, None) for k, e in self._known.items() if k not in current and e is not None]
        self._known = current
        self._fingerprint = fingerprint
        return changes

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self.url,
                timeout=self.command_timeout_s,
                command_timeout=self.command_timeout_s,
                server_settings={"application_name": "alpr-events-watchlist"},
            )
        return self._conn

    def _failed(self, exc: BaseException) -> None:
        missing = self._schema_missing = isinstance(exc, asyncpg.UndefinedTableError)
        self.errors.labels("watchlist_schema" if missing else "watchlist").inc()
        if self._failing_since is not None:
            return
        self._failing_since = time.monotonic()
        if missing:
            # Expected for a moment in `alpr run`: persist creates the schema after events started.
            log.info(
                "watchlist_table_missing", url=redact_url(self.url), hint="persist creates it (migrations)"
            )
        else:
            log.warning(
                "watchlist_database_unavailable",
                url=redact_url(self.url),
                error=f"{type(exc).__name__}: {exc}",
                entries_kept=len(self.watchlist),
                retry_max_s=self.retry_max_s,
            )

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info(
                "watchlist_database_recovered", outage_s=round(time.monotonic() - self._failing_since, 1)
            )
            self._failing_since = None

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # after a failure: nothing to say to the server, do not wait for it

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT_S)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            conn.terminate()
