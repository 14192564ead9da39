import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.errors import InvalidOrcidId
from app.orcid_id import check_digit, is_valid_orcid_id, parse_orcid_id

# str.isdigit() and regex \d accept these too; an iD is ASCII digits only.
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))


class TestParseOrcidId:
    @pytest.mark.parametrize(
        "value, expected",
        [
            ("0000-0002-1825-0097", "0000-0002-1825-0097"),
            ("0000-0002-1694-233X", "0000-0002-1694-233X"),
            ("0000-0002-1694-233x", "0000-0002-1694-233X"),
            ("0000-0001-5109-3700", "0000-0001-5109-3700"),
            ("0009-0003-7578-3214", "0009-0003-7578-3214"),
            ("https://orcid.org/0000-0002-7319-2192", "0000-0002-7319-2192"),
            ("https://sandbox.orcid.org/0000-0002-7319-2192", "0000-0002-7319-2192"),
            ("  0000-0002-1825-0097\n", "0000-0002-1825-0097"),
        ],
        ids=["digit", "x", "lower-x", "zero", "0009-range", "uri", "sandbox-uri", "spaces"],
    )
    def test_accepts_valid_ids_and_returns_the_bare_form(self, value, expected):
        assert parse_orcid_id(value) == expected

    @pytest.mark.parametrize(
        "value",
        [
            "0000-0002-1825-0098",  # wrong check digit
            "0000-0002-1825-009",  # too short
            "0000000218250097",  # no hyphens
            "0000-0002-1825-00970",
            "https://evil.example/0000-0002-1825-0097",
            "0000-0002-1825-00X7",
            "",
            "0000-0002-1825-0097/../x",
        ],
    )
    def test_rejects_malformed_ids(self, value):
        with pytest.raises(InvalidOrcidId) as raised:
            parse_orcid_id(value)
        assert raised.value.reason == "invalid_orcid_id"

    @pytest.mark.parametrize(
        "value",
        [
            "0000-0002-1825-009".translate(ARABIC_INDIC) + "7",
            "0000-0002-1825-0097".translate(FULLWIDTH),
            "0000-0002-1825-009" + "7".translate(ARABIC_INDIC),
        ],
        ids=["arabic-indic-with-ascii-check", "fullwidth", "arabic-indic-check"],
    )
    def test_rejects_digits_other_than_ascii(self, value):
        with pytest.raises(InvalidOrcidId, match="expected 16 digits"):
            parse_orcid_id(value)

    def test_rejects_non_strings(self):
        assert not is_valid_orcid_id(None)


@given(st.text(alphabet="0123456789", min_size=15, max_size=15))
def test_every_15_digits_have_exactly_one_valid_check_character(first15):
    valid = [
        c
        for c in "0123456789X"
        if is_valid_orcid_id(f"{first15[:4]}-{first15[4:8]}-{first15[8:12]}-{first15[12:]}{c}")
    ]
    assert valid == [check_digit(first15)]
