"""Plate text: normalisation, region formats and format-guided correction. Pure functions, no I/O
beyond reading the formats YAML when asked to.

- `normalize()` turns OCR text into the canonical form every later stage compares: upper case, A–Z and
  0–9 only (accents folded, separators and noise dropped), and keeps the per-character alternatives
  aligned with what is left.
- `PlateFormats` holds the regions of `plate_formats.yaml` (plus a user file), each compiled twice: a
  regex for the fast "is this valid" check, and fixed-length position templates for correction.
- `PlateFormats.correct()` tries confusable substitutions (O/0, B/8, …) position by position, using the
  OCR's alternatives and their confidences, and returns the format-valid candidate with the highest
  joint confidence. It never invents characters at positions the read did not have; the only character
  it may drop is one read at a pattern's gap (`~`: where an emblem or a sticker sits between two groups).
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

UNKNOWN_REGION = "unknown"
PLATE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
DIGITS = frozenset("0123456789")
# Larger expansions of one pattern mean a pattern typo (e.g. A{1,20}); refuse them with a clear error.
MAX_TEMPLATES_PER_PATTERN = 4096
# A template position that stands for a gap's stray character (`~`): whatever was read there is dropped.
STRAY = frozenset("~")


class FormatsError(ValueError):
    """The plate formats file is invalid; the message names the region and pattern."""


# --- normalisation ------------------------------------------------------------------------------------

Alternatives = Sequence[Sequence[tuple[str, float]]]


@dataclass(frozen=True, slots=True)
class Normalized:
    raw: str
    text: str
    # One list per character of `text`, best first; empty when the OCR gave none (or they did not align).
    alternatives: tuple[tuple[tuple[str, float], ...], ...]


def _fold(char: str) -> str:
    """One character → its plate character ('' for separators and noise): 'é' → 'E', 'ø' → ''."""
    upper = char.upper()
    if upper in PLATE_CHARS:
        return upper
    decomposed = unicodedata.normalize("NFKD", upper)
    base = "".join(c for c in decomposed if c in PLATE_CHARS)
    return base if len(base) == 1 else ""


def normalize(raw: str, alternatives: Alternatives = ()) -> Normalized:
    """Canonical plate text of an OCR read, with the alternatives of the kept positions.

    Alternatives are used only when there is one list per character of `raw` (what the OCR worker sends);
    otherwise they are dropped rather than misaligned.
    """
    aligned = len(alternatives) == len(raw)
    text: list[str] = []
    alts: list[tuple[tuple[str, float], ...]] = []
    for i, char in enumerate(raw):
        folded = _fold(char)
        if not folded:
            continue
        text.append(folded)
        if aligned:
            merged: dict[str, float] = {}
            for cand, conf in alternatives[i]:
                c = _fold(cand) if len(cand) == 1 else ""
                if c and conf > merged.get(c, -1.0):
                    merged[c] = float(conf)
            if folded not in merged:
                # The read's own character leads its list even if the OCR did not repeat it there.
                merged[folded] = max(merged.values(), default=1.0)
            alts.append(tuple(sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))))
    return Normalized(raw=raw, text="".join(text), alternatives=tuple(alts) if aligned else ())


# --- formats ------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"(L|N|A|~|\[[^\]]+\])(\?|\{\d+(?:,\d+)?\})?")


_CLASSES = {"L": LETTERS, "N": DIGITS, "A": PLATE_CHARS}


def _char_set(token: str) -> frozenset[str]:
    if token in _CLASSES:
        return _CLASSES[token]
    body = token[1:-1]
    out: set[str] = set()
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            lo, hi = body[i], body[i + 2]
            out.update(chr(c) for c in range(ord(lo), ord(hi) + 1))
            i += 3
        else:
            out.add(body[i])
            i += 1
    bad = out - PLATE_CHARS
    if bad or not out:
        raise ValueError(f"character set {token} may hold only A-Z and 0-9")
    return frozenset(out)


def _repeat(quant: str | None) -> tuple[int, int]:
    if not quant:
        return (1, 1)
    if quant == "?":
        return (0, 1)
    lo, _, hi = quant[1:-1].partition(",")
    low = int(lo)
    high = int(hi) if hi else low
    if high < low:
        raise ValueError(f"quantifier {quant}: maximum below minimum")
    return (low, high)


Template = tuple[frozenset[str], ...]


@dataclass(frozen=True)
class PlateFormat:
    region: str
    pattern: str
    regex: re.Pattern[str]
    templates: tuple[Template, ...]
    note: str = ""


def compile_pattern(region: str, pattern: str, length: Sequence[int] | None = None) -> PlateFormat:
    """Compile one pattern of the formats language (see plate_formats.yaml) into a regex and templates."""
    pos = 0
    parts: list[tuple[frozenset[str], int, int]] = []
    regex_parts: list[str] = []
    try:
        while pos < len(pattern):
            m = _TOKEN_RE.match(pattern, pos)
            if m is None:
                raise ValueError(f"cannot read {pattern[pos:]!r}")  # noqa: TRY301 - reported below with the region
            chars = STRAY if m.group(1) == "~" else _char_set(m.group(1))
            if chars is STRAY:
                if m.group(2):
                    raise ValueError("a gap (~) takes no quantifier: it is one optional stray character")  # noqa: TRY301
                # Optional, and never part of a valid plate: the regex skips it, correction may drop it.
                parts.append((STRAY, 0, 1))
                pos = m.end()
                continue
            lo, hi = _repeat(m.group(2))
            parts.append((chars, lo, hi))
            regex_parts.append(f"[{''.join(sorted(chars))}]{{{lo},{hi}}}")
            pos = m.end()
    except ValueError as exc:
        raise FormatsError(f"region {region}: bad pattern {pattern!r}: {exc}") from exc
    if not regex_parts:
        raise FormatsError(f"region {region}: empty pattern")
    min_len, max_len = (length[0], length[1]) if length else (0, 10**6)
    templates: set[Template] = set()
    for counts in itertools.product(*(range(lo, hi + 1) for _, lo, hi in parts)):
        # `length` bounds the plate, which never holds the gap's stray character.
        total = sum(n for (chars, _, _), n in zip(parts, counts, strict=True) if chars is not STRAY)
        if not (max(min_len, 1) <= total <= max_len):
            continue
        templates.add(tuple(chars for (chars, _, _), n in zip(parts, counts, strict=True) for _ in range(n)))
        if len(templates) > MAX_TEMPLATES_PER_PATTERN:
            raise FormatsError(f"region {region}: pattern {pattern!r} allows too many shapes")
    if not templates:
        raise FormatsError(f"region {region}: pattern {pattern!r} with length {length} matches nothing")
    # `length` bounds the whole plate; the token quantifiers alone may allow more.
    bound = f"(?=.{{{max(min_len, 1)},{max_len}}}$)" if length else ""
    regex = re.compile(bound + "".join(regex_parts))
    ordered = tuple(sorted(templates, key=lambda t: (len(t), [sorted(s) for s in t])))
    return PlateFormat(region=region, pattern=pattern, regex=regex, templates=ordered)


@dataclass(frozen=True, slots=True)
class Correction:
    plate: str
    region: str
    changes: int
    # Joint confidence of the chosen characters divided by that of the read's own characters (≤ 1).
    ratio: float


@dataclass(frozen=True, slots=True)
class PlateCheck:
    """What the formats say about one normalised read."""

    plate: str
    region: str
    format_valid: bool
    corrected: bool
    confidence_factor: float = 1.0


class PlateFormats:
    """Every known region's formats; `check()` is the one call the event builder makes."""

    def __init__(
        self,
        regions: Mapping[str, Sequence[PlateFormat]],
        groups: Mapping[str, Sequence[str]],
        confusables: Iterable[tuple[str, str]],
        *,
        names: Mapping[str, str] | None = None,
        weights: Mapping[str, float] | None = None,
        letter_as_digit: Mapping[str, dict[int, int]] | None = None,
    ) -> None:
        self.regions = {code: tuple(fmts) for code, fmts in regions.items()}
        # Per region: the confusable weight that replaces the caller's (formats that fix every position).
        self.weights = dict(weights or {})
        # Per region: letters its plates rarely carry, as a str.translate table to the look-alike digit.
        self.letter_as_digit = dict(letter_as_digit or {})
        self.groups = {name: tuple(members) for name, members in groups.items()}
        self.names = dict(names or {})
        # In file order: on equal scores the pair listed first wins (0 reads as O before D or Q).
        table: dict[str, dict[str, None]] = {}
        for a, b in confusables:
            table.setdefault(a, {})[b] = None
            table.setdefault(b, {})[a] = None
        self.confusables = {k: tuple(v) for k, v in table.items()}
        for group, members in self.groups.items():
            unknown = [m for m in members if m not in self.regions]
            if unknown:
                raise FormatsError(f"group {group} names unknown regions {unknown}")
        self._resolved: dict[tuple[str, ...], tuple[PlateFormat, ...]] = {}

    # --- loading --------------------------------------------------------------------------------------

    @classmethod
    def load(cls, extra: Path | None = None) -> PlateFormats:
        """The built-in formats, with `extra` (a file of the same layout) merged over them."""
        text = resources.files("alpr_events").joinpath("plate_formats.yaml").read_text(encoding="utf-8")
        data = _parse_yaml(text, "built-in plate_formats.yaml")
        if extra is not None:
            try:
                extra_text = extra.read_text(encoding="utf-8")
            except OSError as exc:
                raise FormatsError(f"cannot read plate formats file {extra}: {exc.strerror or exc}") from exc
            more = _parse_yaml(extra_text, str(extra))
            data["regions"] = {**data.get("regions", {}), **more.get("regions", {})}
            data["groups"] = {**data.get("groups", {}), **more.get("groups", {})}
            data["confusables"] = [*data.get("confusables", []), *more.get("confusables", [])]
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PlateFormats:
        regions: dict[str, list[PlateFormat]] = {}
        names: dict[str, str] = {}
        weights: dict[str, float] = {}
        letter_as_digit: dict[str, dict[int, int]] = {}
        for raw_code, spec in (data.get("regions") or {}).items():
            code = str(raw_code).lower()
            if code == UNKNOWN_REGION or not isinstance(spec, dict) or not spec.get("formats"):
                raise FormatsError(f"region {code}: needs a non-empty 'formats' list")
            names[code] = str(spec.get("name", code))
            if "letter_as_digit" in spec:
                letter_as_digit[code] = _letter_table(code, spec["letter_as_digit"])
            if "confusable_weight" in spec:
                weight = spec["confusable_weight"]
                if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 1:
                    raise FormatsError(f"region {code}: confusable_weight must be a number in (0, 1]")
                weights[code] = float(weight)
            fmts: list[PlateFormat] = []
            for item in spec["formats"]:
                entry = item if isinstance(item, dict) else {"pattern": item}
                length = entry.get("length")
                if length is not None and (not isinstance(length, list) or len(length) != 2):
                    raise FormatsError(f"region {code}: length must be [min, max]")
                fmt = compile_pattern(code, str(entry["pattern"]), length)
                fmts.append(
                    PlateFormat(fmt.region, fmt.pattern, fmt.regex, fmt.templates, str(entry.get("note", "")))
                )
            regions[code] = fmts
        groups = {str(k).lower(): [str(m).lower() for m in v] for k, v in (data.get("groups") or {}).items()}
        pairs: list[tuple[str, str]] = []
        for pair in data.get("confusables") or []:
            if not isinstance(pair, list) or len(pair) != 2 or not all(str(c) in PLATE_CHARS for c in pair):
                raise FormatsError(f"confusable {pair!r} must be a pair of characters A-Z / 0-9")
            pairs.append((str(pair[0]), str(pair[1])))
        return cls(regions, groups, pairs, names=names, weights=weights, letter_as_digit=letter_as_digit)

    # --- queries --------------------------------------------------------------------------------------

    def resolve(self, expected: Sequence[str]) -> tuple[str, ...]:
        """Region codes for a camera's expected list (groups expanded, order kept); empty → every region."""
        if not expected:
            return tuple(self.regions)
        out: list[str] = []
        for name in expected:
            key = name.lower()
            members = self.groups.get(key, (key,))
            for code in members:
                if code not in self.regions:
                    raise FormatsError(
                        f"unknown plate region {name!r}; known: {sorted(self.regions)} and groups {sorted(self.groups)}"
                    )
                if code not in out:
                    out.append(code)
        return tuple(out)

    def _formats(self, regions: tuple[str, ...]) -> tuple[PlateFormat, ...]:
        cached = self._resolved.get(regions)
        if cached is None:
            cached = tuple(fmt for code in regions for fmt in self.regions[code])
            self._resolved[regions] = cached
        return cached

    def match(self, plate: str, regions: tuple[str, ...]) -> str | None:
        """The first region (in the given order) with a format that `plate` fits, or None."""
        for fmt in self._formats(regions):
            if fmt.regex.fullmatch(plate):
                return fmt.region
        return None

    def correct(
        self,
        read: Normalized,
        regions: tuple[str, ...],
        *,
        max_changes: int,
        confusable_weight: float,
    ) -> Correction | None:
        """The format-valid candidate with the highest joint confidence, or None if none is in reach.

        Each position may take the read's character, one of its OCR alternatives (at the OCR's
        confidence) or a confusable of either (at `confusable_weight` × the confidence of the character
        it stands in for, unless the OCR offered it itself; a region's own `confusable_weight` replaces
        the argument). A character read at a gap (`~`) may be dropped: a change that costs no confidence.
        At most `max_changes` positions change.
        """
        text = read.text
        n = len(text)
        if n == 0 or max_changes == 0:
            return None
        by_weight: dict[float, tuple[list[list[tuple[str, float]]], list[float]]] = {}
        best: Correction | None = None
        best_key: tuple[float, int] | None = None
        for fmt in self._formats(regions):
            weight = self.weights.get(fmt.region, confusable_weight)
            if weight not in by_weight:
                options = [
                    self._options(text[i], read.alternatives[i] if read.alternatives else (), weight)
                    for i in range(n)
                ]
                by_weight[weight] = (options, [dict(opts)[text[i]] for i, opts in enumerate(options)])
            options, own = by_weight[weight]
            for template in fmt.templates:
                if len(template) != n:
                    continue
                found = _best_fill(text, options, own, template, max_changes)
                if found is None:
                    continue
                plate, log_ratio, changes = found
                key = (log_ratio, -changes)
                # Strictly better only: on a tie the earlier region (camera order, then file) wins.
                if best_key is None or key > best_key:
                    best_key = key
                    best = Correction(plate, fmt.region, changes, math.exp(log_ratio))
        return best

    def _options(
        self, char: str, alternatives: Sequence[tuple[str, float]], weight: float
    ) -> list[tuple[str, float]]:
        scores: dict[str, float] = {c: p for c, p in alternatives} if alternatives else {char: 1.0}
        scores.setdefault(char, max(scores.values()))
        for c, p in list(scores.items()):
            for other in self.confusables.get(c, ()):
                guess = p * weight
                if guess > scores.get(other, 0.0):
                    scores[other] = guess
        # Stable sort: ties keep insertion order (the OCR's own list, then confusables in file order).
        return sorted(scores.items(), key=lambda kv: -kv[1])

    def check(
        self,
        read: Normalized,
        regions: tuple[str, ...],
        *,
        max_changes: int,
        confusable_weight: float,
        min_ratio: float = 0.0,
    ) -> PlateCheck:
        """Valid as read → its region; else the best correction (kept only when its characters are at
        least `min_ratio` as likely as the read's own); else region unknown, not valid. Then a region's
        `letter_as_digit` (see `prefer_digits`)."""
        region = self.match(read.text, regions)
        if region is not None:
            return PlateCheck(self.prefer_digits(read.text, region, regions), region, True, False)
        fix = self.correct(read, regions, max_changes=max_changes, confusable_weight=confusable_weight)
        if fix is None or fix.ratio < min_ratio:
            # Nothing in reach, or only the formats back it against the OCR: the read as it was read.
            plate = self.prefer_digits(read.text, UNKNOWN_REGION, regions)
            return PlateCheck(plate, UNKNOWN_REGION, format_valid=False, corrected=False)
        return PlateCheck(
            self.prefer_digits(fix.plate, fix.region, regions),
            fix.region,
            format_valid=True,
            corrected=True,
            confidence_factor=fix.ratio,
        )

    def prefer_digits(self, plate: str, region: str, regions: tuple[str, ...]) -> str:
        """`plate` with the expected regions' `letter_as_digit` applied when it fits no format (vanity
        and specialty plates) and every expected region rewrites the same way: a camera in the US reads
        an O there as 0. A plate that fits a format keeps what the format chose (US formats are loose
        enough that a rewrite would nearly always fit too; measured worse on the crops: ACCURACY.md)."""
        if region != UNKNOWN_REGION:
            return plate
        tables = [self.letter_as_digit.get(code) for code in regions]
        if not tables or not tables[0] or any(t != tables[0] for t in tables):
            return plate
        return plate.translate(tables[0])


def _best_fill(
    text: str,
    options: list[list[tuple[str, float]]],
    own: list[float],
    template: Template,
    max_changes: int,
) -> tuple[str, float, int] | None:
    """The best characters within one template using at most `max_changes` changes.

    Positions are independent, so the joint maximum is the per-position maximum. A position whose own
    character does not fit must change; one where it fits changes only if an alternative scores higher,
    and when changes run short the largest gains are kept. A gap position (`STRAY`) drops its character:
    a forced change that leaves the joint confidence as it is.
    """
    chars = list(text)
    log_ratio = 0.0
    forced = 0
    optional: list[tuple[float, int, str]] = []
    for i, allowed in enumerate(template):
        if allowed is STRAY:
            forced += 1
            if forced > max_changes:
                return None
            chars[i] = ""
            continue
        pick = next(((c, p) for c, p in options[i] if c in allowed and p > 0), None)
        if pick is None:
            return None
        c, p = pick
        if c == text[i]:
            continue
        gain = math.log(p) - math.log(own[i])
        if text[i] in allowed:
            optional.append((gain, i, c))
            continue
        forced += 1
        if forced > max_changes:
            return None
        chars[i] = c
        log_ratio += gain
    optional.sort(reverse=True)
    for gain, i, c in optional[: max_changes - forced]:
        chars[i] = c
        log_ratio += gain
    changes = forced + min(len(optional), max_changes - forced)
    return "".join(chars), log_ratio, changes


def _letter_table(region: str, spec: object) -> dict[int, int]:
    if not isinstance(spec, dict) or not spec:
        raise FormatsError(f"region {region}: letter_as_digit must map letters to digits, e.g. {{O: '0'}}")
    table: dict[int, int] = {}
    for letter, digit in spec.items():
        if str(letter) not in LETTERS or str(digit) not in DIGITS:
            raise FormatsError(
                f"region {region}: letter_as_digit {letter!r}: {digit!r} must map a letter to a digit"
            )
        table[ord(str(letter))] = ord(str(digit))
    return table


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FormatsError(f"plate formats file {source} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise FormatsError(f"plate formats file {source} must hold a mapping with 'regions'")
    return data
