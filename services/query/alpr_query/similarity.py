"""pg_trgm's trigram similarity in Python, exact to the bit: the fuzzy-search fallback for databases without
pg_trgm (the embedded pgserver has none).

pg_trgm (default build): lower-case the text, split it into words of letters and digits, pad each word with
two spaces in front and one behind, take every 3-character window, keep the distinct ones; similarity =
shared / (|a| + |b| - shared), computed in float4. The same formula exists in SQL as `alpr_similarity()`
(migration 0004); the unit and integration tests check that all three agree.
"""

from __future__ import annotations

import re

import numpy as np

_WORD_SEPARATORS = re.compile(r"[^0-9a-z]+")


def trigrams(text: str) -> frozenset[str]:
    found: set[str] = set()
    for word in _WORD_SEPARATORS.split(text.lower()):
        if word:
            padded = f"  {word} "
            found.update(padded[i : i + 3] for i in range(len(padded) - 2))
    return frozenset(found)


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """The similarity of two trigram sets as pg_trgm returns it (a float4, widened to a Python float)."""
    if not a or not b:
        return 0.0
    shared = len(a & b)
    return float(np.float32(shared) / np.float32(len(a) + len(b) - shared))
