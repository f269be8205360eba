"""ISBT 128 DIN (rule 7) and EU Single European Code (rule 8)."""

import pytest

from cellcommons.catalogue.identifiers import (
    din_check_character,
    din_issues,
    din_problems,
    make_din,
    sec_donation_issues,
    sec_donation_problems,
    sec_product_issues,
    sec_product_problems,
)

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"


def _iso7064_valid(full: str) -> bool:
    """ISO 7064 MOD 37-2 verification as the standard states it: Σ value × 2^(position from the right) ≡ 1 (mod 37)."""
    return sum(ALPHABET.index(c) * 2**power for power, c in enumerate(reversed(full))) % 37 == 1


def test_worked_example_from_domain():
    assert din_check_character("G123498654321") == "H"
    assert make_din("G1234", 98, 654321) == "G123498654321H"
    assert din_problems("G123498654321H") == []


@pytest.mark.parametrize("din", ["W000125000002*", "W000125000039A", "W0001250000680", "G123424000017M"])
def test_check_characters_across_the_alphabet_verify(din):
    assert din_check_character(din[:13]) == din[-1]
    assert _iso7064_valid(din)
    assert din_problems(din) == []


@pytest.mark.parametrize(
    ("facility", "year", "sequence"),
    [("A0001", 0, 0), ("Z9999", 99, 999_999), ("19999", 24, 17), ("G1234", 2024, 17), ("P0420", 26, 123_456)],
)
def test_make_din_gives_valid_dins(facility, year, sequence):
    din = make_din(facility, year, sequence)
    assert len(din) == 14 and din.startswith(facility) and _iso7064_valid(din)
    assert din_issues(din) == []


def test_make_din_takes_a_calendar_year_by_its_last_two_digits():
    assert make_din("G1234", 2024, 17) == make_din("G1234", 24, 17)


@pytest.mark.parametrize(
    ("facility", "year", "sequence"),
    [
        ("O1234", 24, 1),
        ("01234", 24, 1),
        ("G12345", 24, 1),
        ("g1234", 24, 1),
        ("G1234", 24, 1_000_000),
        ("G1234", -1, 1),
    ],
)
def test_make_din_refuses_bad_parts(facility, year, sequence):
    with pytest.raises(ValueError):
        make_din(facility, year, sequence)


def test_check_character_refuses_characters_outside_the_set():
    with pytest.raises(ValueError, match="MOD 37-2"):
        din_check_character("G12349865432-")


@pytest.mark.parametrize(
    ("din", "code", "named"),
    [
        ("G123498654321", "din_length", "13 characters"),
        ("G123498654321H1", "din_length", "15 characters"),
        ("", "din_length", "0 characters"),
        ("g123498654321H", "din_lowercase", "lower-case"),
        ("G123498654321h", "din_lowercase", "lower-case"),
        ("O123498654321H", "din_facility", "'O1234'"),
        ("0123498654321H", "din_facility", "'01234'"),
        ("GA23498654321H", "din_facility", "'GA234'"),
        ("G1234X8654321H", "din_year", "'X8'"),
        ("G12349865432AH", "din_sequence", "'65432A'"),
        ("G123498654321J", "din_check_character", "gives 'H'"),
        ("G123498654321*", "din_check_character", "gives 'H'"),
        ("G123498654322H", "din_check_character", "over 'G123498654322'"),
    ],
)
def test_bad_dins_are_explained(din, code, named):
    issues = din_issues(din)
    assert [issue.code for issue in issues] == [code]
    assert named in issues[0].message
    assert din_problems(din) == [issues[0].message]


def test_a_din_with_several_bad_segments_names_each():
    assert [i.code for i in din_issues("O1234X865432AH")] == ["din_facility", "din_year", "din_sequence"]


VALID_SEC_DONATION = "NL000123" + "2400000000017"
VALID_SEC_PRODUCT = "E0123456" + "001" + "20260301"


@pytest.mark.parametrize("value", [VALID_SEC_DONATION, "BE1A2B3CABCDEFGHIJ0123"[:21]])
def test_valid_sec_donation_parts(value):
    assert sec_donation_problems(value) == []


@pytest.mark.parametrize("value", [VALID_SEC_PRODUCT, "A1234567A0100000000", "B000000100120240229"])
def test_valid_sec_product_parts(value):
    assert sec_product_problems(value) == []


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (VALID_SEC_DONATION[:-1], "sec_donation_length"),
        (VALID_SEC_DONATION + " E0123456", "sec_donation_length"),
        ("nl0001232400000000017", "sec_donation_lowercase"),
        ("120001232400000000017", "sec_donation_country"),
        ("NL00012*2400000000017", "sec_donation_establishment"),
        ("NL0001232400-00000017", "sec_donation_number"),
    ],
)
def test_bad_sec_donation_parts(value, code):
    assert [issue.code for issue in sec_donation_issues(value)] == [code]


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (VALID_SEC_PRODUCT[:-1], "sec_product_length"),
        ("C012345600120260301", "sec_product_coding_system"),
        ("E01234-600120260301", "sec_product_code"),
        ("E0123456_0120260301", "sec_product_split"),
        ("E012345600120260230", "sec_product_expiry"),
        ("E012345600120261301", "sec_product_expiry"),
        ("E012345600120250229", "sec_product_expiry"),
        ("E01234560012026030A", "sec_product_expiry"),
        ("e012345600120260301", "sec_product_lowercase"),
    ],
)
def test_bad_sec_product_parts(value, code):
    issues = sec_product_issues(value)
    assert [issue.code for issue in issues] == [code]
    assert sec_product_problems(value) == [issues[0].message]
