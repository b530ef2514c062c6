"""Opaque keyset cursors: where the next page of a newest-first listing starts.

A page ends at some row; the cursor holds that row's sort key — `(first_seen, event_id)`, plus the score
when results are ranked by fuzzy similarity — and a short fingerprint of the filters it was made for. The
next query asks for rows strictly after that key (`WHERE (first_seen, event_id) < ($t, $id)`), which an
index walks without any OFFSET scan, and which neither repeats nor skips a row when new events are
inserted between pages. The cursor is base64url JSON: opaque to clients (they must not build one), not a
secret (it only holds values the client already received). A cursor used with other filters is a 400.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from alpr_query.errors import BadParameter

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_CURSOR_CHARS = 512


class _Wire(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    t: int  # first_seen in microseconds since the epoch (exact: timestamptz has microsecond precision)
    i: str  # event_id
    f: str  # filter fingerprint
    s: float | None = None  # similarity score of a ranked (fuzzy) listing


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Wire)


@dataclass(frozen=True, slots=True)
class Position:
    first_seen: datetime
    event_id: str
    score: float | None = None


def fingerprint(*parts: object) -> str:
    """A short digest of the filters a listing was made with."""
    return hashlib.blake2s(repr(parts).encode(), digest_size=6).hexdigest()


def encode(position: Position, filters: str) -> str:
    delta = position.first_seen - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    wire = _Wire(t=micros, i=position.event_id, f=filters, s=position.score)
    return base64.urlsafe_b64encode(_encoder.encode(wire)).rstrip(b"=").decode()


def decode(cursor: str, filters: str) -> Position:
    """The position of a cursor made for the same filters; `BadParameter("cursor")` otherwise."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise BadParameter("cursor", "is not a cursor this API returned")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        wire = _decoder.decode(raw)
        first_seen = _EPOCH + timedelta(microseconds=wire.t)
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError, OverflowError):
        raise BadParameter("cursor", "is not a cursor this API returned") from None
    if wire.f != filters:
        raise BadParameter("cursor", "was made for other filters; start again without a cursor")
    if "\x00" in wire.i:
        raise BadParameter("cursor", "is not a cursor this API returned")
    return Position(first_seen=first_seen, event_id=wire.i, score=wire.s)
