"""Checks of request values that the type annotations cannot express, each failing with a 400 that names
the parameter (`BadParameter`). Pure functions; the route handlers call them before any SQL runs, so a
value the database would choke on (a NUL byte, a lone surrogate, a year-0 timestamp) never reaches it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from litestar.params import PathParameter

from alpr_query.errors import BadParameter

# Path segments naming a resource (event, watchlist entry, key) or a plate; the handlers check them again
# (`identifier`, `plate`) so that a value outside the pattern is a 400 naming the parameter.
PathId = Annotated[
    str, PathParameter(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
]
PathPlate = Annotated[
    str, PathParameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 .-]{0,63}$")
]

# Plates are stored normalised (events): upper-case letters and digits, no separators.
MAX_PLATE_CHARS = 16
MAX_TEXT_CHARS = 200
_PLATE_SEPARATORS = re.compile(r"[\s\-.·_]+")
_PLATE_RE = re.compile(r"^[A-Z0-9]+$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
# Stored events lie between 2000 and 2200 (persist rejects the rest); a wider window still accepts
# generous ranges ("everything since 1970") without letting a year-1 value overflow a conversion.
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2300, 1, 1, tzinfo=UTC)


def text(name: str, value: str, *, max_chars: int = MAX_TEXT_CHARS) -> str:
    """A free-text filter value: non-empty, bounded, valid UTF-8 without control characters."""
    if not value:
        raise BadParameter(name, "must not be empty")
    if len(value) > max_chars:
        raise BadParameter(name, f"is {len(value)} characters long (at most {max_chars})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadParameter(name, "is not valid UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise BadParameter(name, "contains a control character")
    return value


def optional_text(name: str, value: str | None, *, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    return None if value is None else text(name, value, max_chars=max_chars)


def identifier(name: str, value: str) -> str:
    """An id (event, camera, watchlist entry, key): letters, digits and `_ . : -`, up to 200 characters."""
    if not _ID_RE.match(value):
        raise BadParameter(
            name, "must be 1-200 letters, digits or '_', '.', ':', '-', starting with a letter or digit"
        )
    return value


def plate(name: str, value: str) -> str:
    """The canonical form of a plate as events stores it: separators removed, upper case, A-Z and 0-9."""
    text(name, value, max_chars=64)
    folded = _PLATE_SEPARATORS.sub("", value).upper()
    if not folded:
        raise BadParameter(name, "has no letters or digits")
    if not _PLATE_RE.match(folded):
        raise BadParameter(name, "may contain only the letters A-Z, digits and separators (space, '-', '.')")
    if len(folded) > MAX_PLATE_CHARS:
        raise BadParameter(name, f"has {len(folded)} characters (at most {MAX_PLATE_CHARS})")
    return folded


def time(name: str, value: datetime | None) -> datetime | None:
    """An instant within 1970..2300; a value without a zone is taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        in_utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise BadParameter(name, "is outside the supported range 1970-2300") from None
    if not MIN_TIME <= in_utc < MAX_TIME:
        raise BadParameter(name, "is outside the supported range 1970-2300")
    return in_utc


def time_range(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    start = time("from", since)
    end = time("to", until)
    if start is not None and end is not None and end <= start:
        raise BadParameter("to", "must be later than from")
    return start, end


def limit(value: int, maximum: int) -> int:
    if not 1 <= value <= maximum:
        raise BadParameter("limit", f"must be between 1 and {maximum} (query.max_page_size)")
    return value
