"""Schema migrations: versioned SQL files applied in order, once, under a lock.

Files live in `alpr_persist/migrations/` as `NNNN_name.sql`, or `NNNN_name.<variant>.sql` where a step
differs between the two time-series layouts (`partitioned`: native range partitions; `timescale`:
TimescaleDB hypertables). Applied versions are recorded in `alpr_schema_migrations` with the file's
SHA-256, so an edited migration is caught instead of silently diverging. Each migration runs in its own
transaction together with its record; a session advisory lock serialises concurrent runners (several
persist instances starting at once, or `alpr db migrate` beside them).

The layout is chosen once, when `plate_events` is first created (`persist.timeseries`: auto picks
TimescaleDB when the extension is installed and preloaded), and recorded; later runs follow the record.

After the files, `migrate()` re-runs the idempotent steps that depend on the server rather than the
version: the trigram index (when pg_trgm became available), day partitions ahead (plain path) and the
TimescaleDB policies (from the settings).

To add a column later: a new file `NNNN_add_x.sql` with `ALTER TABLE plate_events ADD COLUMN ...` (on the
plain path this reaches every partition; on TimescaleDB every chunk), plus the column in `rows.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from typing import TYPE_CHECKING, Literal

from alpr_persist import partitions
from alpr_shared.settings import PersistSettings

if TYPE_CHECKING:
    from alpr_persist.partitions import Conn

MIGRATIONS_TABLE = "alpr_schema_migrations"
# pg_advisory_lock key of the migration runner ("alpr-mig").
MIGRATION_LOCK_KEY = 0x616C_7072_2D6D_6967
Layout = Literal["partitioned", "timescale"]
_FILE_RE = re.compile(
    r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)(?:\.(?P<variant>partitioned|timescale))?\.sql$"
)


class MigrationError(RuntimeError):
    """The database cannot be brought to this build's schema; the message says why and what to do."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    variant: Layout | None
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}" + (f" ({self.variant})" if self.variant else "")


@dataclass(frozen=True)
class Applied:
    version: int
    name: str
    variant: str | None
    checksum: str


@dataclass
class MigrateResult:
    layout: Layout
    applied: list[str] = field(default_factory=list)
    trigram_index: bool = False
    partitions_created: list[str] = field(default_factory=list)


@dataclass
class SchemaStatus:
    current: int
    latest: int
    layout: Layout | None
    pending: list[str]
    trigram_index: bool
    pg_trgm_available: bool
    timescaledb_available: bool
    server_version: str


def all_migrations() -> dict[int, dict[Layout | None, Migration]]:
    """Every migration file of this build, by version and variant."""
    found: dict[int, dict[Layout | None, Migration]] = {}
    for entry in resources.files("alpr_persist.migrations").iterdir():
        match = _FILE_RE.match(entry.name)
        if not match:
            continue
        version = int(match["version"])
        variant: Layout | None = match["variant"]  # type: ignore[assignment] # the regex admits only the two layouts
        found.setdefault(version, {})[variant] = Migration(version, match["name"], variant, entry.read_text())
    return dict(sorted(found.items()))


def plan(layout: Layout) -> list[Migration]:
    """The migrations of one layout, in version order."""
    chosen: list[Migration] = []
    for version, variants in all_migrations().items():
        migration = variants.get(layout) or variants.get(None)
        if migration is None:
            raise MigrationError(f"migration {version:04d} has no file for the {layout} layout")
        chosen.append(migration)
    return chosen


async def _ensure_table(conn: Conn) -> None:
    await conn.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            variant    text,
            checksum   text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


async def applied_migrations(conn: Conn) -> dict[int, Applied]:
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", MIGRATIONS_TABLE)
    if not exists:
        return {}
    rows = await conn.fetch(f"SELECT version, name, variant, checksum FROM {MIGRATIONS_TABLE}")  # noqa: S608 - a constant
    return {r["version"]: Applied(r["version"], r["name"], r["variant"], r["checksum"]) for r in rows}


async def extension_available(conn: Conn, name: str) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = $1)", name
    )
    return found


async def timescaledb_usable(conn: Conn) -> bool:
    """TimescaleDB is installed on the server and preloaded (CREATE EXTENSION fails without the preload)."""
    if not await extension_available(conn, "timescaledb"):
        return False
    preload: str = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
    return "timescaledb" in preload


def recorded_layout(applied: dict[int, Applied]) -> Layout | None:
    for row in applied.values():
        if row.variant == "partitioned":
            return "partitioned"
        if row.variant == "timescale":
            return "timescale"
    return None


async def choose_layout(conn: Conn, wanted: str, applied: dict[int, Applied]) -> Layout:
    recorded = recorded_layout(applied)
    if recorded is not None:
        asked = {"timescaledb": "timescale", "partitioned": "partitioned"}.get(wanted)
        if asked is not None and asked != recorded:
            raise MigrationError(
                f"persist.timeseries is {wanted!r} but this database was set up with the {recorded} layout; "
                "a layout cannot be changed in place (set timeseries: auto, or migrate the data yourself)"
            )
        return recorded
    usable = await timescaledb_usable(conn)
    if wanted == "timescaledb" and not usable:
        raise MigrationError(
            "persist.timeseries is 'timescaledb' but the server has no usable TimescaleDB "
            "(install it and add timescaledb to shared_preload_libraries, or use auto/partitioned)"
        )
    if wanted == "partitioned":
        return "partitioned"
    return "timescale" if usable else "partitioned"


async def _lock(conn: Conn, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY):
        if time.monotonic() > deadline:
            raise MigrationError(f"another migration run has held the lock for over {timeout_s:.0f} s")
        await asyncio.sleep(0.2)


async def _unlock(conn: Conn) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


def _check_history(applied: dict[int, Applied], migrations: list[Migration]) -> None:
    known = {m.version: m for m in migrations}
    newer = sorted(v for v in applied if v not in known)
    if newer:
        raise MigrationError(
            f"the database has migration(s) {newer} that this build does not know: it was migrated by a "
            "newer alpr; run that version (or newer) instead"
        )
    for version, row in applied.items():
        migration = known[version]
        if row.checksum != migration.checksum:
            raise MigrationError(
                f"migration {migration.label} was changed after it was applied (checksum differs); "
                "never edit an applied migration — add a new one"
            )


async def ensure_trigram_index(conn: Conn) -> bool:
    """Create pg_trgm and the trigram index when the server has the extension; True if the index exists."""
    if await extension_available(conn, "pg_trgm"):
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        await conn.execute(
            "CREATE INDEX IF NOT EXISTS plate_events_plate_trgm ON plate_events USING gin (plate gin_trgm_ops) "
            "WITH (gin_pending_list_limit = 32768)"
        )
    return await has_trigram_index(conn)


async def has_trigram_index(conn: Conn) -> bool:
    found: bool = await conn.fetchval("SELECT to_regclass('plate_events_plate_trgm') IS NOT NULL")
    return found


async def apply_timescale_policies(conn: Conn, settings: PersistSettings) -> None:
    """Retention and compression policies from the settings (replacing earlier ones). UNTESTED here: no
    TimescaleDB server on the development machines."""
    for table, days in (
        ("plate_events", settings.retention_days),
        ("plate_event_images", settings.image_retention_days),
        ("plate_events_hourly", settings.rollup_retention_days),
    ):
        await conn.execute("SELECT remove_retention_policy($1::regclass, if_exists => true)", table)
        await conn.execute(
            "SELECT add_retention_policy($1::regclass, drop_after => make_interval(days => $2))", table, days
        )
    await conn.execute("SELECT remove_compression_policy('plate_events'::regclass, if_exists => true)")
    await conn.execute(
        "SELECT add_compression_policy('plate_events'::regclass, compress_after => make_interval(days => $1))",
        settings.compress_after_days,
    )


async def migrate(conn: Conn, settings: PersistSettings, *, lock_timeout_s: float = 120.0) -> MigrateResult:
    """Bring the database to this build's schema; a no-op (apart from the idempotent steps) when it is."""
    await _lock(conn, lock_timeout_s)
    try:
        await _ensure_table(conn)
        applied = await applied_migrations(conn)
        layout = await choose_layout(conn, settings.timeseries, applied)
        migrations = plan(layout)
        _check_history(applied, migrations)
        result = MigrateResult(layout=layout)
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (version, name, variant, checksum) VALUES ($1, $2, $3, $4)",  # noqa: S608
                    migration.version,
                    migration.name,
                    migration.variant,
                    migration.checksum,
                )
            result.applied.append(migration.label)
        result.trigram_index = await ensure_trigram_index(conn)
        if layout == "partitioned":
            today = partitions.today_utc()
            days = [today + timedelta(days=d) for d in range(-1, settings.partition_lead_days + 1)]
            for table in partitions.PARTITIONED_TABLES:
                result.partitions_created += await partitions.ensure_partitions(conn, table, days)
        else:
            await apply_timescale_policies(conn, settings)
        return result
    finally:
        await _unlock(conn)


async def status(conn: Conn) -> SchemaStatus:
    applied = await applied_migrations(conn)
    layout = recorded_layout(applied)
    migrations = plan(layout or "partitioned")
    pending = [m.label for m in migrations if m.version not in applied]
    has_events = await conn.fetchval("SELECT to_regclass('plate_events') IS NOT NULL")
    return SchemaStatus(
        current=max(applied, default=0),
        latest=max((m.version for m in migrations), default=0),
        layout=layout,
        pending=pending,
        trigram_index=bool(has_events) and await has_trigram_index(conn),
        pg_trgm_available=await extension_available(conn, "pg_trgm"),
        timescaledb_available=await timescaledb_usable(conn),
        server_version=str(await conn.fetchval("SHOW server_version")),
    )
