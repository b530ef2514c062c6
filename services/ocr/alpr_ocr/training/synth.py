"""Synthetic licence plates: a renderer that returns the image *and* the label it claims.

Owns: region layouts (US states, EU countries, Brazil old and Mercosul; one- and two-row), the fonts it may
use, plate colours and borders, the distractors real plates carry (state names, slogans, registration
stickers, logos, the dealer's frame text, the EU band's country code) and the camera effects (perspective,
loose or tight crops, blur, lighting, noise, JPEG).

Fonts, all offline and all under permissive licences:
- DejaVu (Sans, Sans Condensed, Sans Mono, Serif; Bitstream Vera licence + public-domain changes), from
  Debian's `fonts-dejavu-core` (/usr/share/fonts/truetype/dejavu) or the copy inside matplotlib's wheel;
- OpenCV's Hershey vector fonts (part of OpenCV, Apache-2.0), drawn stroke by stroke.
Every glyph is also condensed horizontally at random: real plate typefaces are tall and narrow.

The label is exactly the text of the glyphs the renderer drew, row by row (top row first), over the plate
alphabet A–Z 0–9. Separators (space, dash, emblem) and every distractor are drawn outside the label.

Must never: download anything, or draw a distractor inside the box of a label glyph.
"""

from __future__ import annotations

import functools
import io
import random
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from alpr_ocr.recognizer import PLATE_ALPHABET

Image = npt.NDArray[np.uint8]
RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), in plate pixels

LETTERS = string.ascii_uppercase
DIGITS = string.digits

_FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/TTF"),
)
_FONT_FILES = (
    "DejaVuSansCondensed-Bold.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSansCondensed.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSans.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerifCondensed-Bold.ttf",
)
_DISTRACTOR_FONT_FILES = (
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerifCondensed-BoldItalic.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSans.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSans-Bold.ttf",
)
HERSHEY_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
)

US_STATES = tuple(
    "ALABAMA ALASKA ARIZONA ARKANSAS California COLORADO Connecticut DELAWARE Florida GEORGIA Hawaii IDAHO "
    "Illinois INDIANA Iowa KANSAS Kentucky Louisiana MAINE Maryland Massachusetts Michigan Minnesota "
    "Mississippi Missouri MONTANA Nebraska NEVADA New-Hampshire New-Jersey New-Mexico NEW-YORK "
    "North-Carolina OHIO OKLAHOMA OREGON Pennsylvania Rhode-Island TENNESSEE TEXAS UTAH Vermont "
    "VIRGINIA Washington WISCONSIN WYOMING Washington-D.C.".replace("-", "_").split()
)
SLOGANS = (
    "Land of Lincoln",
    "SUNSHINE STATE",
    "Celebrate & Discover",
    "THE NATURAL STATE",
    "FAMOUS POTATOES",
    "ALOHA STATE",
    "10,000 lakes",
    "The Spirit of America",
    "SPORTSMAN'S PARADISE",
    "GRAND CANYON STATE",
    "www.maryland.gov",
    "We Support Our Troops",
    "Taxation Without Representation",
    "First in Flight",
    "Live Free or Die",
    "Show Me State",
    "Bluegrass State",
    "In God We Trust",
    "Great Lakes State",
    "Empire State",
    "Wild Wonderful",
    "Lone Star State",
    "Garden State",
    "Peach State",
    "Celebrating Statehood",
)
DEALERS = (
    "SMITH FORD",
    "AUTO NATION",
    "TOYOTA OF DALLAS",
    "HONDA CITY",
    "CAPITOL CHEVROLET",
    "BEST USED CARS",
    "MIKE'S MOTORS 555-0101",
    "AUTOHAUS",
    "CARMAX",
    "JEEP DODGE RAM",
)
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


# --- layouts -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """A region's plate: patterns (`L` letter, `D` digit, `A` either, ` ` gap, `-` dash, `*` emblem; `|`
    splits the rows of a two-row plate), its width/height and its style."""

    name: str
    patterns: tuple[str, ...]
    aspect: tuple[float, float]
    style: str  # "us", "eu", "br-old", "mercosul"
    weight: float = 1.0

    @property
    def rows(self) -> int:
        return 2 if "|" in self.patterns[0] else 1


LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "us",
        (
            "DLLLDDD",
            "LLL DDDD",
            "LLL-DDDD",
            "DDD LLL",
            "DDD-LLL",
            "LLL DDD",
            "LLL-DDD",
            "DDDD LL",
            "DD LDDDD",
            "LL DDDDD",
            "DLL DDD",
            "DDD DDDD",
            "LLD DDDD",
            "DLDDDDL",
            "LDD DDDD",
            "LLDDDD",
            "DDDDDD",
            "DDLDDDL",
            "DDL DDDL",
            "L DDDDD",
            "LL-DDDD",
            "DDD*DDD",
            "LLL*DDD",
            "AAAAAA",
            "AAAAAAA",
            "AAAAA",
            "AAAA",
            "DDDDLDD",
        ),
        (1.75, 2.25),
        "us",
        weight=6.0,
    ),
    Layout(
        "eu",
        (
            "LL DDDD LL",
            "LL-DDD-LL",
            "LL DDD-LL",
            "LL*DDD-LL",
            "LLDDDLL",
            "LLDD LLL",
            "LL DDDDD",
            "LLL DDDDD",
            "LL LL DDDD",
            "L LL DDD",
            "DDDD LLL",
            "LL-DDDD",
            "LLDDDDD",
            "DLDDDDD",
            "AAAAAAA",
        ),
        (4.0, 4.8),
        "eu",
        weight=3.0,
    ),
    Layout("br-old", ("LLL-DDDD", "LLL DDDD"), (2.8, 3.2), "br-old", weight=1.0),
    Layout("mercosul", ("LLLDLDD", "LLLDDDD"), (2.9, 3.2), "mercosul", weight=1.0),
    Layout(
        "us-2row",
        ("DDD|LLL", "LL|DDDD", "DDDD|LL", "LLL|DDD", "DD|DDDD", "L|DDDDD"),
        (1.35, 1.75),
        "us",
        weight=0.6,
    ),
    Layout(
        "eu-2row",
        ("LL|DDDD", "LLD|DDDD", "LL DD|DDDD", "LLL|DDDL"),
        (1.2, 1.6),
        "eu",
        weight=0.4,
    ),
)


def layout_named(name: str) -> Layout:
    for layout in LAYOUTS:
        if layout.name == name:
            return layout
    raise KeyError(f"unknown plate layout {name!r}; known: {', '.join(x.name for x in LAYOUTS)}")


def fill_pattern(pattern: str, rng: random.Random) -> str:
    """Replace `L`, `D`, `A` by random characters; keeps separators (space, `-`, `*`, `|`)."""
    out = []
    for p in pattern:
        if p == "L":
            out.append(rng.choice(LETTERS))
        elif p == "D":
            out.append(rng.choice(DIGITS))
        elif p == "A":
            out.append(rng.choice(LETTERS if rng.random() < 0.6 else DIGITS))
        else:
            out.append(p)
    return "".join(out)


def label_of(text: str) -> str:
    """The label a plate text claims: its plate-alphabet characters, rows concatenated top first."""
    return "".join(ch for ch in text if ch in PLATE_ALPHABET)


# --- fonts ---------------------------------------------------------------------------------------------


@functools.cache
def font_paths(distractor: bool = False) -> tuple[Path, ...]:
    """TrueType fonts found offline (Debian's DejaVu, else matplotlib's copy); may be empty."""
    names = _DISTRACTOR_FONT_FILES if distractor else _FONT_FILES
    dirs = list(_FONT_DIRS)
    if not any((d / names[0]).is_file() for d in dirs):
        try:
            import matplotlib  # noqa: PLC0415 - optional: only a second source of the same DejaVu files

            dirs.append(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf")
        except ImportError:
            pass
    found: dict[str, Path] = {}
    for name in names:
        for d in dirs:
            if (d / name).is_file():
                found.setdefault(name, d / name)
                break
    return tuple(found[n] for n in names if n in found)


@functools.lru_cache(maxsize=512)
def _truetype(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


@dataclass(frozen=True, slots=True)
class GlyphFont:
    """How the label glyphs of one plate are drawn: a TrueType file or a Hershey font id, a horizontal
    condensing factor and a stroke weight."""

    path: Path | None
    hershey: int
    condense: float
    stroke: int

    def mask(self, ch: str, height: int) -> Image:
        """The glyph's ink (0/255) cropped to its bounding box, `height` pixels tall."""
        ink = _glyph_ink(self.path, self.hershey, self.stroke, ch)
        gh, gw = ink.shape
        width = max(2, round(gw * height / gh * self.condense))
        return cv2.resize(ink, (width, height), interpolation=cv2.INTER_AREA)  # type: ignore[return-value]


_GLYPH_SIZE = 72  # glyphs are drawn once at this height, then scaled: rendering stays cheap


@functools.lru_cache(maxsize=4096)
def _glyph_ink(path: Path | None, hershey: int, stroke: int, ch: str) -> Image:
    if path is not None:
        font = _truetype(path, int(_GLYPH_SIZE * 1.45))
        left, top, right, bottom = font.getbbox(ch, stroke_width=stroke * 2)
        canvas = PILImage.new("L", (int(right - left) + 4, int(bottom - top) + 4), 0)
        ImageDraw.Draw(canvas).text(
            (2 - left, 2 - top), ch, fill=255, font=font, stroke_width=stroke * 2, stroke_fill=255
        )
        ink = np.asarray(canvas, dtype=np.uint8)
    else:
        scale = _GLYPH_SIZE / 22.0
        thickness = max(1, round(scale * 2.2) + stroke * 2)
        (w, h), base = cv2.getTextSize(ch, hershey, scale, thickness)
        ink = np.zeros((h + base + 2 * thickness + 4, w + 2 * thickness + 4), np.uint8)
        cv2.putText(ink, ch, (thickness + 2, h + thickness + 2), hershey, scale, 255, thickness, cv2.LINE_AA)
    ys, xs = np.nonzero(ink > 40)
    if len(xs) == 0:
        raise ValueError(f"font draws no ink for {ch!r}")
    return ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].copy()


def random_font(rng: random.Random) -> GlyphFont:
    paths = font_paths()
    use_hershey = not paths or rng.random() < 0.18
    if use_hershey:
        return GlyphFont(None, rng.choice(HERSHEY_FONTS), rng.uniform(0.55, 0.95), rng.randint(0, 2))
    return GlyphFont(rng.choice(paths), 0, rng.uniform(0.55, 1.0), rng.choice((0, 0, 0, 1, 2)))


# --- rendering ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Glyph:
    char: str
    box: Box
    row: int


@dataclass(slots=True)
class RenderedPlate:
    """A flat plate (RGB, plate pixels) with the glyphs of its label, in reading order."""

    image: Image
    text: str  # the plate's text as laid out (separators included, `|` between rows)
    glyphs: list[Glyph]
    layout: str
    font: GlyphFont
    ink: RGB
    background: RGB
    label_region: Box = (0, 0, 0, 0)  # the box of all label glyphs (no distractor inside)

    @property
    def label(self) -> str:
        return "".join(g.char for g in self.glyphs)


@dataclass(slots=True)
class Sample:
    """One training sample: a camera-like crop (BGR uint8) and its label; `rows` = 2 for stacked plates."""

    image: Image
    label: str
    rows: int = 1
    layout: str = ""
    meta: dict[str, float] = field(default_factory=dict)


_BACKGROUNDS: tuple[tuple[RGB, RGB], ...] = (
    ((245, 245, 240), (20, 30, 110)),  # white, dark blue (many US states)
    ((250, 250, 250), (15, 15, 15)),  # white, black (EU)
    ((240, 240, 235), (140, 20, 30)),  # white, maroon (Illinois, Texas)
    ((235, 242, 235), (20, 90, 50)),  # white, green (Colorado, Vermont)
    ((250, 215, 40), (15, 15, 15)),  # yellow, black (UK rear, NY, NL)
    ((245, 230, 120), (30, 40, 120)),  # pale yellow, blue
    ((215, 225, 240), (20, 20, 90)),  # pale blue, navy
    ((200, 200, 200), (10, 10, 10)),  # grey, black (old Brazil)
    ((30, 40, 90), (240, 240, 240)),  # dark, light: inverted plates
    ((25, 25, 25), (245, 245, 245)),
    ((60, 110, 60), (250, 250, 250)),
    ((240, 235, 220), (180, 30, 30)),
)


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return (
        int(a[0] * (1 - t) + b[0] * t),
        int(a[1] * (1 - t) + b[1] * t),
        int(a[2] * (1 - t) + b[2] * t),
    )


def _jitter(colour: RGB, rng: random.Random, amount: int = 18) -> RGB:
    return (
        int(np.clip(colour[0] + rng.randint(-amount, amount), 0, 255)),
        int(np.clip(colour[1] + rng.randint(-amount, amount), 0, 255)),
        int(np.clip(colour[2] + rng.randint(-amount, amount), 0, 255)),
    )


def _paint(canvas: Image, mask: Image, x: int, y: int, colour: RGB) -> None:
    """Alpha-blend `colour` through `mask` onto `canvas` at (x, y), clipped to the canvas."""
    h, w = mask.shape
    ch, cw = canvas.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(cw, x + w), min(ch, y + h)
    if x0 >= x1 or y0 >= y1:
        return
    alpha = mask[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float32)[..., None] / 255.0
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    canvas[y0:y1, x0:x1] = (region * (1 - alpha) + np.array(colour, np.float32) * alpha).astype(np.uint8)


def _text_mask(text: str, height: int, rng: random.Random, font_path: Path | None = None) -> Image:
    """Distractor text (state names, slogans, frame text) as an ink mask `height` pixels tall."""
    paths = font_paths(distractor=True) or font_paths()
    if not paths:
        hershey = GlyphFont(None, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 0)
        parts = [hershey.mask(c, height) for c in text if c.strip()]
        return np.hstack(parts) if parts else np.zeros((height, 4), np.uint8)
    path = font_path or rng.choice(paths)
    font = _truetype(path, max(6, int(height * 1.3)))
    left, top, right, bottom = font.getbbox(text)
    canvas = PILImage.new("L", (max(4, int(right - left) + 4), max(4, int(bottom - top) + 4)), 0)
    ImageDraw.Draw(canvas).text((2 - left, 2 - top), text, fill=255, font=font)
    ink = np.asarray(canvas, dtype=np.uint8)
    ys, xs = np.nonzero(ink > 40)
    if len(xs) == 0:
        return np.zeros((height, 4), np.uint8)
    ink = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    gh, gw = ink.shape
    return cv2.resize(ink, (max(2, int(gw * height / gh)), height), interpolation=cv2.INTER_AREA)  # type: ignore[return-value]


def _fit_width(mask: Image, max_width: int) -> Image:
    h, w = mask.shape
    if w <= max_width:
        return mask
    return cv2.resize(mask, (max_width, h), interpolation=cv2.INTER_AREA)  # type: ignore[return-value]


def render_plate(  # noqa: PLR0912, PLR0915 - one drawing step after another, in plate order
    rng: random.Random,
    layout: Layout | None = None,
    text: str | None = None,
    *,
    height: int | None = None,
    font: GlyphFont | None = None,
    distractors: bool = True,
) -> RenderedPlate:
    """Render one flat plate. `text` uses the layout's separators (` `, `-`, `*`, `|` between rows);
    by default a random text of a random pattern of `layout` (by default a random layout)."""
    if layout is None:
        layout = rng.choices(LAYOUTS, weights=[x.weight for x in LAYOUTS])[0]
    if text is None:
        text = fill_pattern(rng.choice(layout.patterns), rng)
    if any(ch not in PLATE_ALPHABET + " -*|" for ch in text):
        raise ValueError(f"plate text {text!r} has characters outside A-Z 0-9 and the separators ' -*|'")
    font = font or random_font(rng)
    height = height or rng.randint(56, 96)
    width = int(height * rng.uniform(*layout.aspect))
    bg, ink = rng.choice(_BACKGROUNDS)
    if layout.style == "eu" and rng.random() < 0.7:
        bg, ink = ((250, 250, 250), (15, 15, 15)) if rng.random() < 0.7 else ((250, 210, 30), (10, 10, 10))
    if layout.style == "mercosul":
        bg, ink = (248, 248, 248), (15, 15, 15)
    bg, ink = _jitter(bg, rng, 12), _jitter(ink, rng, 20)
    plate = np.empty((height, width, 3), np.uint8)
    plate[:] = bg
    # A soft background picture (gradient, hills) like many US plates.
    if distractors and layout.style == "us" and rng.random() < 0.6:
        tint = _jitter(_mix(bg, (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255)), 0.35), rng)
        ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
        if rng.random() < 0.5:
            ramp = ramp[::-1]
        plate[:] = (plate * (1 - ramp * 0.7) + np.array(tint, np.float32) * ramp * 0.7).astype(np.uint8)

    left, right = int(width * 0.04), int(width * 0.96)
    top_band, bottom_band = int(height * 0.05), int(height * 0.95)
    if layout.style == "eu":
        band_w = int(height * rng.uniform(0.28, 0.36))
        if rng.random() < 0.85:
            plate[:, :band_w] = _jitter((20, 50, 160), rng, 15)
            if distractors:
                code = rng.choice(("D", "F", "I", "NL", "E", "PL", "HR", "GB", "CZ", "A", "B", "SK"))
                mask = _fit_width(_text_mask(code, int(height * 0.25), rng), band_w - 4)
                _paint(plate, mask, (band_w - mask.shape[1]) // 2, int(height * 0.66), (250, 250, 250))
                for k in range(12):  # the ring of stars
                    angle = k * np.pi / 6
                    cx = int(band_w / 2 + np.cos(angle) * band_w * 0.28)
                    cy = int(height * 0.32 + np.sin(angle) * band_w * 0.28)
                    cv2.circle(plate, (cx, cy), max(1, height // 60), (250, 210, 30), -1)
        left = band_w + int(width * 0.02)
    if layout.style == "mercosul":
        band_h = int(height * 0.22)
        plate[:band_h] = _jitter((20, 50, 160), rng, 10)
        if distractors:
            mask = _text_mask("BRASIL", int(band_h * 0.6), rng)
            _paint(plate, mask, (width - mask.shape[1]) // 2, int(band_h * 0.2), (250, 250, 250))
        top_band = band_h + int(height * 0.04)

    # Distractor text above and below the label (state name, slogan, city), in its own bands.
    text_top, text_bottom = top_band, bottom_band
    if distractors and layout.style in ("us", "br-old") and rng.random() < 0.9:
        name = (
            rng.choice(US_STATES).replace("_", " ")
            if layout.style == "us"
            else rng.choice(("SP SAO PAULO", "RJ RIO"))
        )
        size = int(height * rng.uniform(0.13, 0.22))
        mask = _fit_width(_text_mask(name, size, rng), right - left)
        colour = _jitter(rng.choice((ink, (180, 30, 30), (20, 40, 140), (30, 30, 30))), rng)
        _paint(plate, mask, left + (right - left - mask.shape[1]) // 2, top_band, colour)
        text_top = top_band + size + int(height * 0.04)
    if distractors and layout.style == "us" and rng.random() < 0.7:
        slogan = rng.choice(SLOGANS)
        size = int(height * rng.uniform(0.09, 0.15))
        mask = _fit_width(_text_mask(slogan, size, rng), right - left)
        colour = _jitter(rng.choice((ink, (180, 30, 30), (20, 40, 140))), rng)
        y = bottom_band - size
        _paint(plate, mask, left + (right - left - mask.shape[1]) // 2, y, colour)
        text_bottom = y - int(height * 0.04)
    if layout.style != "us" or text_bottom - text_top < height * 0.45:
        text_top = max(text_top, int(height * 0.12)) if layout.style != "mercosul" else text_top
        text_bottom = min(text_bottom, int(height * 0.9))

    rows = text.split("|")
    row_gap = int(height * 0.06)
    avail = text_bottom - text_top
    if len(rows) == 2:
        ratio = rng.uniform(0.42, 0.55)
        row_heights = [int((avail - row_gap) * ratio), int((avail - row_gap) * (1 - ratio))]
    else:
        row_heights = [int(avail * rng.uniform(0.78, 0.95))]
    glyphs: list[Glyph] = []
    y = text_top + (avail - sum(row_heights) - row_gap * (len(rows) - 1)) // 2
    region = [width, height, 0, 0]
    for r, (row_text, gh) in enumerate(zip(rows, row_heights, strict=True)):
        masks: list[tuple[str, Image]] = []
        spacing = max(1, int(gh * rng.uniform(0.05, 0.16)))
        for ch in row_text:
            if ch == " ":
                masks.append((ch, np.zeros((gh, max(2, int(gh * rng.uniform(0.15, 0.45)))), np.uint8)))
            elif ch == "-":
                w = max(3, int(gh * rng.uniform(0.18, 0.3)))
                dash = np.zeros((gh, w), np.uint8)
                t = max(1, gh // 10)
                dash[gh // 2 - t // 2 - 1 : gh // 2 + t, :] = 255
                masks.append((ch, dash))
            elif ch == "*":
                w = max(4, int(gh * rng.uniform(0.35, 0.6)))
                emblem = np.zeros((gh, w), np.uint8)
                if rng.random() < 0.5:
                    cv2.ellipse(emblem, (w // 2, gh // 2), (w // 2 - 1, int(gh * 0.3)), 0, 0, 360, 255, -1)
                else:
                    pts = np.array([[w // 2, int(gh * 0.2)], [w - 1, int(gh * 0.8)], [0, int(gh * 0.8)]])
                    cv2.fillPoly(emblem, [pts.astype(np.int32)], 255)
                masks.append((ch, emblem))
            else:
                masks.append((ch, font.mask(ch, gh)))
        total = sum(m.shape[1] for _, m in masks) + spacing * (len(masks) - 1)
        room = right - left
        if total > room:  # squeeze the row to fit the plate
            factor = room / total
            masks = [
                (
                    c,
                    np.asarray(
                        cv2.resize(m, (max(2, int(m.shape[1] * factor)), gh), interpolation=cv2.INTER_AREA),
                        np.uint8,
                    ),
                )
                for c, m in masks
            ]
            spacing = max(1, int(spacing * factor))
            total = sum(m.shape[1] for _, m in masks) + spacing * (len(masks) - 1)
        x = left + (room - total) // 2
        for ch, m in masks:
            if ch in PLATE_ALPHABET:
                _paint(plate, m, x, y, ink)
                glyphs.append(Glyph(ch, (x, y, x + m.shape[1], y + gh), r))
                region = [
                    min(region[0], x),
                    min(region[1], y),
                    max(region[2], x + m.shape[1]),
                    max(region[3], y + gh),
                ]
            elif ch in "-*":
                _paint(plate, m, x, y, _jitter(ink, rng, 40) if ch == "*" else ink)
            x += m.shape[1] + spacing
        y += gh + row_gap

    if distractors and layout.style == "us":
        _stickers(plate, rng, region)
    if rng.random() < 0.8:  # the plate's embossed rim or painted border
        thickness = max(1, int(height * rng.uniform(0.01, 0.04)))
        colour = _jitter(rng.choice((ink, (40, 40, 40), (200, 200, 200))), rng)
        cv2.rectangle(plate, (0, 0), (width - 1, height - 1), colour, thickness)
    return RenderedPlate(
        plate, text, glyphs, layout.name, font, ink, bg, (region[0], region[1], region[2], region[3])
    )


def _stickers(plate: Image, rng: random.Random, keep_out: Sequence[int]) -> None:
    """Registration stickers and small stacked letters in the corners, outside the label glyphs."""
    height, width = plate.shape[:2]
    x0, y0, x1, y1 = keep_out
    for _ in range(rng.randint(0, 2)):
        sh = int(height * rng.uniform(0.12, 0.22))
        sw = int(sh * rng.uniform(1.0, 2.0))
        corner = rng.choice(("tl", "tr", "bl", "br"))
        sx = (
            rng.randint(2, max(3, x0 - sw))
            if corner[1] == "l"
            else rng.randint(min(x1, width - sw - 3), width - sw - 2)
        )
        sy = (
            rng.randint(2, max(3, y0 - sh))
            if corner[0] == "t"
            else rng.randint(min(y1, height - sh - 3), height - sh - 2)
        )
        if sx + sw > x0 and sx < x1 and sy + sh > y0 and sy < y1:
            continue  # would cover a label glyph
        colour = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        cv2.rectangle(plate, (sx, sy), (sx + sw, sy + sh), colour, -1)
        words = (rng.choice(MONTHS), f"{rng.randint(0, 99):02d}", f"20{rng.randint(0, 29):02d}")
        mask = _fit_width(_text_mask(rng.choice(words), max(4, int(sh * 0.7)), rng), max(2, sw - 2))
        text_colour = (10, 10, 10) if sum(colour) > 380 else (245, 245, 245)
        _paint(plate, mask, sx + 1, sy + max(0, (sh - mask.shape[0]) // 2), text_colour)
    # Small letters stacked vertically beside the text (county or plate-type codes, e.g. Minnesota's `HC`).
    gh = y1 - y0
    if gh > 0 and rng.random() < 0.25:
        size = max(5, int(gh * rng.uniform(0.3, 0.45)))
        letters = [_text_mask(rng.choice(LETTERS), size, rng) for _ in range(2)]
        sw = max(m.shape[1] for m in letters)
        right_room, left_room = width - x1 - 4, x0 - 4
        if right_room >= sw + 2:
            sx = x1 + 2 + rng.randint(0, max(0, min(4, right_room - sw - 2)))
        elif left_room >= sw + 2:
            sx = x0 - sw - 2
        else:
            return
        colour = _jitter((20, 20, 20), rng, 20)
        sy = y0 + max(0, (gh - 2 * size - 2) // 2)
        for k, m in enumerate(letters):
            _paint(plate, m, sx, sy + k * (size + 2), colour)


# --- camera effects -----------------------------------------------------------------------------------


def _surround(rng: random.Random, h: int, w: int) -> Image:
    """What lies around a plate in a photo: car paint, bumper, shadow, with some texture."""
    base = np.array(
        rng.choice(
            ((20, 20, 20), (200, 200, 205), (120, 20, 20), (30, 40, 80), (230, 230, 230), (90, 90, 90))
        ),
        np.float32,
    )
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(
        0, rng.uniform(2, 25), (h // 8 + 2, w // 8 + 2)
    )
    texture = cv2.resize(noise.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    out = base[None, None, :] + rng.uniform(-30, 30) + texture[:, :, None]
    surround: Image = np.clip(out, 0, 255).astype(np.uint8)
    return surround


def _frame(plate: Image, rng: random.Random) -> Image:
    """A dealer's plate frame around the plate, with its own text at the bottom (or top)."""
    h, w = plate.shape[:2]
    top, side = int(h * rng.uniform(0.04, 0.15)), int(h * rng.uniform(0.03, 0.08))
    bottom = int(h * rng.uniform(0.1, 0.25))
    colour = rng.choice(((15, 15, 15), (190, 190, 195), (160, 130, 40)))
    out = np.empty((h + top + bottom, w + 2 * side, 3), np.uint8)
    out[:] = colour
    out[top : top + h, side : side + w] = plate
    mask = _fit_width(_text_mask(rng.choice(DEALERS), max(4, int(bottom * 0.6)), rng), w)
    text_colour = (240, 240, 240) if sum(colour) < 300 else (20, 20, 20)
    _paint(out, mask, side + (w - mask.shape[1]) // 2, top + h + (bottom - mask.shape[0]) // 2, text_colour)
    return out


def augment(  # noqa: PLR0915 - one camera effect after another
    plate: RenderedPlate, rng: random.Random, *, strength: float = 1.0
) -> Image:
    """A camera's view of the flat plate: frame, perspective, crop margins, scale, blur, light, noise, JPEG."""
    img = plate.image
    if rng.random() < 0.25 * strength:
        img = _frame(img, rng)
    h, w = img.shape[:2]
    pad = int(h * 0.6)
    canvas = _surround(rng, h + 2 * pad, w + 2 * pad)
    canvas[pad : pad + h, pad : pad + w] = img
    # Perspective: move each corner of the plate a little, then crop around the warped plate.
    d = 0.06 * strength
    src = np.array([[pad, pad], [pad + w, pad], [pad + w, pad + h], [pad, pad + h]], np.float32)
    dst = src + np.array([[rng.uniform(-d, d) * w, rng.uniform(-d, d) * h * 2] for _ in range(4)], np.float32)
    angle = np.deg2rad(rng.uniform(-6, 6) * strength)
    centre = src.mean(axis=0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
    dst = (dst - centre) @ rot.T + centre
    matrix = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    warped = cv2.warpPerspective(
        canvas,
        matrix,
        (canvas.shape[1], canvas.shape[0]),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    xs, ys = dst[:, 0], dst[:, 1]
    bw, bh = xs.max() - xs.min(), ys.max() - ys.min()
    # Crop margins: mostly tight (ready-made crops), sometimes loose (a detector's box) or clipped.
    m = [rng.uniform(-0.03, 0.08 if rng.random() < 0.7 else 0.25) * strength for _ in range(4)]
    x0 = int(np.clip(xs.min() - m[0] * bw, 0, warped.shape[1] - 2))
    x1 = int(np.clip(xs.max() + m[1] * bw, x0 + 2, warped.shape[1]))
    y0 = int(np.clip(ys.min() - m[2] * bh, 0, warped.shape[0] - 2))
    y1 = int(np.clip(ys.max() + m[3] * bh, y0 + 2, warped.shape[0]))
    crop = warped[y0:y1, x0:x1]
    # Resolution: a far plate is small; it is read after the recogniser scales it up again.
    target_h = int(rng.choice((rng.uniform(18, 40), rng.uniform(30, 70), rng.uniform(50, 100))))
    target_h = max(16, min(target_h, crop.shape[0]))
    target_w = max(12, int(crop.shape[1] * target_h / crop.shape[0]))
    small = cv2.resize(crop, (target_w, target_h), interpolation=cv2.INTER_AREA)
    out: Any = small.astype(np.float32)  # cv2 filters keep float32
    if rng.random() < 0.35 * strength:  # blur: focus or motion, milder on small crops
        if rng.random() < 0.6 or target_h < 30:
            k = 3 if target_h < 40 else rng.choice((3, 5))
            out = cv2.GaussianBlur(out, (k, k), rng.uniform(0.3, 1.0))
        else:
            k = rng.choice((3, 5))
            kernel = np.zeros((k, k), np.float32)
            kernel[k // 2, :] = 1.0 / k
            out = cv2.filter2D(out, -1, kernel)
    # Lighting: overall gain/offset, a gradient and sometimes a hard shadow edge.
    gain, offset = rng.uniform(0.6, 1.2), rng.uniform(-30, 30)
    out = out * gain + offset
    if rng.random() < 0.5 * strength:
        gx = np.linspace(rng.uniform(-0.35, 0.35), rng.uniform(-0.35, 0.35), out.shape[1], dtype=np.float32)
        out = out * (1 + gx[None, :, None])
    if rng.random() < 0.15 * strength:
        cut = rng.randint(0, out.shape[1] - 1)
        out[:, :cut] *= rng.uniform(0.35, 0.7)
    out += np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(0, 10) * strength, out.shape)
    result: Any = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        quality = rng.randint(25, 90)
        ok, buf = cv2.imencode(".jpg", result, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            result = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if rng.random() < 0.3:  # back to the crop's original size, as the recogniser might see it upscaled
        result = cv2.resize(result, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_CUBIC)
    view: Image = result
    return view


def sample(rng: random.Random, *, strength: float = 1.0) -> Sample:
    """One camera-like synthetic crop (BGR) and its label."""
    plate = render_plate(rng)
    image = augment(plate, rng, strength=strength)
    return Sample(image[:, :, ::-1].copy(), plate.label, 2 if "|" in plate.text else 1, plate.layout)


def to_png(image: Image) -> bytes:
    """PNG bytes of a BGR image (for writing previews)."""
    buf = io.BytesIO()
    PILImage.fromarray(image[:, :, ::-1]).save(buf, format="PNG")
    return buf.getvalue()
