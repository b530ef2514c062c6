"""Plate text: normalisation, every region's formats, and format-guided correction."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alpr_events.plates import (
    UNKNOWN_REGION,
    FormatsError,
    PlateFormats,
    compile_pattern,
    normalize,
)


@pytest.fixture(scope="module")
def formats() -> PlateFormats:
    return PlateFormats.load()


def check(formats: PlateFormats, text: str, regions: list[str], alts=(), max_changes: int = 2):
    return formats.check(
        normalize(text, alts), formats.resolve(regions), max_changes=max_changes, confusable_weight=0.5
    )


# --- normalisation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("ab-123-cd", "AB123CD"),
        ("M·AB 1234", "MAB1234"),
        ("  7abc 123 ", "7ABC123"),
        ("ÖZ.12:3|4", "OZ1234"),  # accents folded, noise dropped
        ("ß€$%", ""),
        ("B-MW_1234/E", "BMW1234E"),
    ],
)
def test_normalize(raw: str, text: str) -> None:
    n = normalize(raw)
    assert n.text == text
    assert n.raw == raw


def test_normalize_keeps_alternatives_aligned_with_kept_characters() -> None:
    n = normalize("a-0", [[("a", 0.9), ("4", 0.1)], [("-", 1.0)], [("0", 0.6), ("o", 0.4)]])
    assert n.text == "A0"
    assert n.alternatives == ((("A", 0.9), ("4", 0.1)), (("0", 0.6), ("O", 0.4)))


def test_normalize_drops_misaligned_alternatives() -> None:
    assert normalize("ABC", [[("A", 1.0)]]).alternatives == ()


@given(st.text(max_size=20))
@settings(max_examples=300, deadline=None)
def test_normalize_output_is_canonical_and_idempotent(raw: str) -> None:
    n = normalize(raw)
    assert all(c.isascii() and (c.isupper() or c.isdigit()) for c in n.text)
    assert normalize(n.text).text == n.text


# --- region formats --------------------------------------------------------------------------------------

VALID = {
    "us": ["ABC1234", "7ABC123", "ABC123", "123ABC", "AB12345", "ABCD12"],
    "de": ["BMW1234", "MA1", "BAB1234E", "KHH123H", "BA1"],
    "fr": ["AB123CD", "1234AB56", "12ABC34"],
    "it": ["AB123CD"],
    "es": ["1234BCD", "M1234AB", "GR1234A"],
    "nl": ["AB1234", "12AB34", "AB12CD", "1ABC23", "12ABC3", "AB123C"],
    "pl": ["WX12345", "KR1234A", "WPR12345"],
    "gb": ["AB12CDE", "A123BCD", "ABC123D"],
    "br": ["ABC1234", "ABC1D23"],
}
INVALID = {
    "us": ["12", "ABCDEFGHI"],
    "de": ["1234BMW", "B1", "ABCDE12345", "ABCDE1234"],
    "fr": ["ABC123D", "AB12CD"],
    "it": ["A123BCD", "AB1234C"],
    "es": ["1234AEI", "1234BC"],  # vowels are not used in the current series
    "nl": ["ABC1234", "A1B2C3"],
    "pl": ["W123456", "WX1234"],
    "gb": ["1AB2CDE", "AB123CD"],
    "br": ["AB1234", "ABCD123", "AB1C234"],
}


@pytest.mark.parametrize(("region", "plates"), VALID.items())
def test_each_region_accepts_its_formats(formats: PlateFormats, region: str, plates: list[str]) -> None:
    for plate in plates:
        assert formats.match(plate, (region,)) == region, plate


@pytest.mark.parametrize(("region", "plates"), INVALID.items())
def test_each_region_rejects_other_shapes(formats: PlateFormats, region: str, plates: list[str]) -> None:
    for plate in plates:
        assert formats.match(plate, (region,)) is None, plate


def test_groups_and_default_regions(formats: PlateFormats) -> None:
    assert formats.resolve(["eu"]) == ("de", "fr", "it", "es", "nl", "pl", "gb", "sk", "cz", "hu", "hr")
    assert formats.resolve([]) == tuple(formats.regions)
    assert formats.resolve(["br", "eu"])[0] == "br"
    with pytest.raises(FormatsError, match="unknown plate region 'xx'"):
        formats.resolve(["xx"])


def test_first_expected_region_wins_an_ambiguous_plate(formats: PlateFormats) -> None:
    # LLLNNNN is both a US series and Brazil's pre-Mercosur format.
    assert check(formats, "ABC1234", ["br", "us"]).region == "br"
    assert check(formats, "ABC1234", ["us", "br"]).region == "us"


def test_unknown_region_when_nothing_fits(formats: PlateFormats) -> None:
    result = check(formats, "QQQQQQQQQQQQ", [])
    assert (result.region, result.format_valid, result.corrected) == (UNKNOWN_REGION, False, False)


@pytest.mark.parametrize(
    ("pattern", "length", "error"),
    [
        ("LX", None, "cannot read"),
        ("[a-z]", None, "only A-Z"),
        ("L{3,1}", None, "maximum below"),
        ("L", [5, 6], "matches nothing"),
    ],
)
def test_bad_patterns_are_reported_with_the_region(pattern: str, length, error: str) -> None:
    with pytest.raises(FormatsError, match=f"region zz: .*{error}"):
        compile_pattern("zz", pattern, length)


def test_user_formats_file_adds_and_replaces_regions(tmp_path: Path) -> None:
    extra = tmp_path / "formats.yaml"
    extra.write_text(
        "regions:\n  ch:\n    name: Switzerland\n    formats: ['LLN{1,6}']\n  it:\n    formats: [LLNNNNN]\n"
    )
    merged = PlateFormats.load(extra)
    assert merged.match("ZH123456", ("ch",)) == "ch"
    assert merged.match("AB12345", ("it",)) == "it"
    assert merged.match("AB123CD", ("it",)) is None  # replaced, not appended
    assert "de" in merged.regions


def test_broken_formats_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "formats.yaml"
    bad.write_text("regions: [unclosed\n")
    with pytest.raises(FormatsError, match="not valid YAML"):
        PlateFormats.load(bad)
    with pytest.raises(FormatsError, match="cannot read"):
        PlateFormats.load(tmp_path / "missing.yaml")


# --- correction ------------------------------------------------------------------------------------------


def test_valid_read_is_not_corrected(formats: PlateFormats) -> None:
    result = check(formats, "AB123CD", ["fr"])
    assert (result.plate, result.format_valid, result.corrected) == ("AB123CD", True, False)


def test_confusables_fix_a_read_that_misses_the_format(formats: PlateFormats) -> None:
    # Mercosur LLLNLNN read with 8 for B; the old LLLNNNN would need a second change (D→0).
    result = check(formats, "A8C 1D23", ["br"])
    assert result.plate == "ABC1D23"
    assert result.region == "br" and result.format_valid and result.corrected
    assert result.confidence_factor == pytest.approx(0.5)  # one guess at weight 0.5
    # Two slips: 0 for O and 8 for B.
    two = check(formats, "A80 1D23", ["br"])
    assert two.plate == "ABO1D23"
    assert two.confidence_factor == pytest.approx(0.25)


def test_ocr_alternatives_outrank_blind_confusables(formats: PlateFormats) -> None:
    # Position 4 of "AB12CDE" read as "I"; the OCR's second choice there was "1" at 0.3.
    alts = [[(c, 0.95)] for c in "AB1"] + [[("I", 0.6), ("1", 0.3)]] + [[(c, 0.95)] for c in "CDE"]
    result = check(formats, "AB1ICDE", ["gb"], alts)
    assert result.plate == "AB11CDE"
    assert result.confidence_factor == pytest.approx(0.3 / 0.6)


def test_alternative_that_is_not_a_confusable_is_used(formats: PlateFormats) -> None:
    # "H" for "M" is no confusable pair, but the OCR offered M as second choice: DE needs a letter.
    alts = [[("B", 0.9)], [("7", 0.5), ("M", 0.4)], [("W", 0.9)], *[[(c, 0.9)] for c in "1234"]]
    result = check(formats, "B7W1234", ["de"], alts)
    assert result.plate == "BMW1234"


def test_joint_confidence_picks_between_formats(formats: PlateFormats) -> None:
    # "A8C1234" fits neither BR format; "ABC1234" (old) needs 8→B; Mercosur "ABC1D34" would need more.
    alts = [[("A", 0.9)], [("8", 0.6), ("B", 0.35)], *[[(c, 0.9)] for c in "C1234"]]
    result = check(formats, "A8C1234", ["br"], alts)
    assert result.plate == "ABC1234"


def test_correction_gives_up_beyond_max_changes(formats: PlateFormats) -> None:
    result = check(formats, "0000000", ["gb"], max_changes=2)  # gb needs ≥ 4 letters
    assert not result.format_valid and result.region == UNKNOWN_REGION and result.plate == "0000000"


def test_correction_never_changes_the_length(formats: PlateFormats) -> None:
    assert not check(formats, "AB12C", ["fr"]).format_valid


PATTERNS = {"br": "LLLNLNN", "gb": "LLNNLLL", "fr": "LLNNNLL"}
SWAP = {"O": "0", "I": "1", "B": "8", "S": "5", "Z": "2", "G": "6"}


@given(
    region=st.sampled_from(sorted(PATTERNS)),
    letters=st.lists(st.sampled_from(sorted(SWAP)), min_size=7, max_size=7),
    digits=st.lists(st.sampled_from("0123456789"), min_size=7, max_size=7),
    flip=st.integers(min_value=0, max_value=6),
)
@settings(max_examples=200, deadline=None)
def test_property_one_confusable_slip_is_undone(
    formats: PlateFormats, region: str, letters: list[str], digits: list[str], flip: int
) -> None:
    pattern = PATTERNS[region]
    truth = "".join(letters[i] if p == "L" else digits[i] for i, p in enumerate(pattern))
    if pattern[flip] != "L":
        return  # only letters have a one-way slip into a digit in SWAP
    read = truth[:flip] + SWAP[truth[flip]] + truth[flip + 1 :]
    if formats.match(read, (region,)):
        return  # the slip produced another valid plate (gb B800BBB): nothing says it is wrong
    result = check(formats, read, [region])
    assert result.format_valid
    assert formats.match(result.plate, (region,)) == region
    assert result.plate == truth


@given(text=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=9))
@settings(max_examples=300, deadline=None)
def test_property_a_correction_is_always_valid_and_close(formats: PlateFormats, text: str) -> None:
    result = check(formats, text, [])
    if result.corrected:
        assert formats.match(result.plate, formats.resolve([])) is not None
        if len(result.plate) == len(text):
            assert sum(a != b for a, b in zip(result.plate, text, strict=True)) <= 2
        else:
            # One character dropped at a gap (`~`), then at most one more change.
            assert len(result.plate) == len(text) - 1
            assert any(
                sum(a != b for a, b in zip(result.plate, text[:i] + text[i + 1 :], strict=True)) <= 1
                for i in range(len(text))
            )
        assert 0 < result.confidence_factor <= 1
    elif result.format_valid:
        assert result.plate == text


# --- gaps (`~`) and per-region confusable weights -------------------------------------------------------


def test_a_gap_is_never_part_of_a_valid_plate(formats: PlateFormats) -> None:
    sk = formats.resolve(["sk"])
    assert formats.match("RK346AL", sk) == "sk"
    assert formats.match("RK8346AL", sk) is None


@pytest.mark.parametrize(
    ("read", "region", "plate"),
    [
        ("RK8346AL", "sk", "RK346AL"),  # the Slovak coat of arms read as 8
        ("BAB302OZ", "sk", "BA302OZ"),
        ("2T480211", "cz", "2T40211"),  # an inspection sticker between the groups
        ("ZGB1234AB", "hr", "ZG1234AB"),
    ],
)
def test_a_character_read_at_a_gap_is_dropped(
    formats: PlateFormats, read: str, region: str, plate: str
) -> None:
    result = check(formats, read, [region])
    assert (result.plate, result.region, result.format_valid, result.corrected) == (plate, region, True, True)
    # The drop itself costs no confidence: the shape alone backs it.
    assert result.confidence_factor == 1.0


def test_a_character_away_from_the_gap_is_never_dropped(formats: PlateFormats) -> None:
    # Nine characters: no Slovak template that long, so no drop anywhere else.
    assert not check(formats, "RK346AL12", ["sk"]).format_valid
    # The gap only drops; it never lets a missing character through.
    assert not check(formats, "RK46AL", ["sk"]).format_valid


def test_a_gap_takes_no_quantifier() -> None:
    with pytest.raises(FormatsError, match="gap"):
        compile_pattern("zz", "LL~{2}NN")
    assert compile_pattern("zz", "LL~NN").regex.fullmatch("AB12")


def test_a_regions_confusable_weight_replaces_the_callers(formats: PlateFormats) -> None:
    # O read as 0 in the letters of a Slovak plate; the OCR offered no alternative.
    strict = check(formats, "PP587A0", ["sk"])
    assert (strict.plate, strict.corrected) == ("PP587AO", True)
    assert strict.confidence_factor == pytest.approx(0.7)
    plain = PlateFormats.from_mapping(
        {"regions": {"sk": {"formats": ["LLNNNLL"]}}, "confusables": [["O", "0"]]}
    )
    loose = plain.check(normalize("PP587A0"), ("sk",), max_changes=2, confusable_weight=0.5)
    assert (loose.plate, loose.corrected) == ("PP587AO", True)
    assert loose.confidence_factor == pytest.approx(0.5)


@pytest.mark.parametrize("weight", [0, 1.5, "high", True])
def test_a_bad_region_weight_is_refused(weight: object) -> None:
    with pytest.raises(FormatsError, match="region sk: confusable_weight"):
        PlateFormats.from_mapping({"regions": {"sk": {"formats": ["LLNNNLL"], "confusable_weight": weight}}})


# --- letters a region's plates rarely carry, and the correction floor ----------------------------------


def test_an_o_on_a_us_plate_that_fits_no_format_reads_as_zero(formats: PlateFormats) -> None:
    vanity = check(formats, "HOLAMUNDO", ["us"])
    assert (vanity.plate, vanity.region, vanity.format_valid) == ("H0LAMUND0", UNKNOWN_REGION, False)
    # A plate that fits a format keeps what the format chose: LLLNNNN wants a letter there.
    assert check(formats, "ABO1234", ["us"]).plate == "ABO1234"
    # Only when every expected region agrees: Germany keeps its O.
    assert check(formats, "HOLAMUNDO", ["us", "de"]).plate == "HOLAMUNDO"
    assert check(formats, "HOLAMUNDO", []).plate == "HOLAMUNDO"


@pytest.mark.parametrize("table", [{"0": "O"}, {"O": "Q"}, {}, "O0"])
def test_a_bad_letter_as_digit_table_is_refused(table: object) -> None:
    with pytest.raises(FormatsError, match="region us: letter_as_digit"):
        PlateFormats.from_mapping({"regions": {"us": {"formats": ["LLLNNNN"], "letter_as_digit": table}}})


def test_a_correction_below_the_floor_keeps_the_read_as_read(formats: PlateFormats) -> None:
    sk = formats.resolve(["sk"])
    one = formats.check(normalize("PP587A0"), sk, max_changes=2, confusable_weight=0.5, min_ratio=0.6)
    assert (one.plate, one.corrected) == ("PP587AO", True)  # 0.7 ≥ 0.6
    two = formats.check(normalize("PP58740"), sk, max_changes=2, confusable_weight=0.5, min_ratio=0.6)
    assert (two.plate, two.region, two.format_valid, two.corrected) == (
        "PP58740",
        UNKNOWN_REGION,
        False,
        False,
    )
