import calendar
import datetime as dt

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.fuzzy_date import FuzzyDate
from tests.orcid_json import fuzzy


class TestFuzzyDate:
    @pytest.mark.parametrize(
        "text, first, last",
        [
            ("2024", "2024-01-01", "2024-12-31"),
            ("2024-02", "2024-02-01", "2024-02-29"),  # leap year
            ("2023-02", "2023-02-01", "2023-02-28"),
            ("1900-02", "1900-02-01", "1900-02-28"),  # century, not leap
            ("2000-02", "2000-02-01", "2000-02-29"),  # 400-year rule, leap
            ("2025-06", "2025-06-01", "2025-06-30"),
            ("2025-06-15", "2025-06-15", "2025-06-15"),
            ("2024-02-29", "2024-02-29", "2024-02-29"),
        ],
    )
    def test_partial_dates_cover_their_whole_year_or_month(self, text, first, last):
        date = FuzzyDate.from_orcid(fuzzy(text))
        assert date.first_day() == dt.date.fromisoformat(first)
        assert date.last_day() == dt.date.fromisoformat(last)
        assert str(date) == text

    @pytest.mark.parametrize(
        "value",
        [
            {"year": {"value": "2023"}, "month": {"value": "02"}, "day": {"value": "29"}},
            {"year": {"value": "2023"}, "month": {"value": "13"}, "day": None},
            {"year": {"value": "2023"}, "month": None, "day": {"value": "01"}},
            {"year": {"value": "1899"}, "month": {"value": "12"}, "day": {"value": "31"}},
            {"year": {"value": "2101"}},
            {"year": {"value": "9999"}, "month": {"value": "12"}, "day": {"value": "31"}},
            {"year": {"value": "0001"}, "month": {"value": "01"}, "day": {"value": "01"}},
            {"year": {"value": "twenty"}},
            {"year": "2023"},
            "2023-01-01",
        ],
        ids=[
            "feb-29-not-leap",
            "month-13",
            "day-without-month",
            "before-1900",
            "after-2100",
            "year-9999",
            "year-1",
            "not-a-number",
            "unwrapped",
            "string",
        ],
    )
    def test_malformed_orcid_dates_are_refused(self, value):
        with pytest.raises(ValueError):
            FuzzyDate.from_orcid(value)

    def test_null_and_all_null_dates_mean_no_date(self):
        assert FuzzyDate.from_orcid(None) is None
        assert FuzzyDate.from_orcid({"year": None, "month": None, "day": None}) is None
        assert FuzzyDate.from_orcid({"year": None}) is None

    @pytest.mark.parametrize(
        "value",
        [
            {"year": None, "month": {"value": "06"}, "day": None},
            {"year": None, "month": {"value": "06"}, "day": {"value": "30"}},
            {"month": {"value": "06"}},
            {"year": None, "month": None, "day": {"value": "01"}},
            {"year": {"value": "2024"}, "month": {"value": "06"}, "day": {"value": "31"}},
            {"year": {"value": "٢٠٢٥"}},  # Arabic-Indic digits: str.isdigit() is True
            {"year": {"value": "２０２５"}},  # fullwidth digits
            {"year": {"value": "2025"}, "month": {"value": "٠٦"}},
            {"year": {"value": 2025}},  # a number, not ORCID's string
            {"year": {"value": " 2025"}},
            {"year": {"value": "2025", "extra": 1}},
            {"year": {"value": "2025"}, "era": {"value": "BC"}},
            {},  # ORCID writes its members, null or not
        ],
        ids=[
            "month-without-year",
            "month-and-day-without-year",
            "year-missing",
            "day-without-month-or-year",
            "june-31",
            "arabic-indic-digits",
            "fullwidth-digits",
            "arabic-indic-month",
            "number-not-string",
            "padded",
            "extra-member-in-part",
            "extra-member",
            "no-members",
        ],
    )
    def test_dates_the_schema_does_not_allow_are_malformed_never_no_date(self, value):
        with pytest.raises(ValueError):
            FuzzyDate.from_orcid(value)

    @pytest.mark.parametrize("text", ["1900-01-01", "2100-12-31"], ids=["first", "last"])
    def test_the_ends_of_orcids_year_range_are_accepted(self, text):
        assert str(FuzzyDate.from_orcid(fuzzy(text))) == text


@st.composite
def fuzzy_dates(draw):
    year = draw(st.integers(1900, 2100))
    month = draw(st.one_of(st.none(), st.integers(1, 12)))
    day = None
    if month is not None and draw(st.booleans()):
        day = draw(st.integers(1, calendar.monthrange(year, month)[1]))
    return FuzzyDate(year, month, day)


@given(fuzzy_dates())
def test_a_fuzzy_date_starts_no_later_than_it_ends(date):
    assert date.first_day() <= date.last_day()
    assert date.first_day().year == date.last_day().year == date.year


@given(fuzzy_dates())
@example(FuzzyDate(2024, 2, 29))
@example(FuzzyDate(2023, 12, 31))
@example(FuzzyDate(2100, 1, 1))
def test_the_day_after_the_last_day_is_outside_the_date(date):
    after = date.last_day() + dt.timedelta(days=1)
    before = date.first_day() - dt.timedelta(days=1)
    if date.month is None:
        assert after.year == date.year + 1 and before.year == date.year - 1
    elif date.day is not None:
        day = dt.date(date.year, date.month, date.day)
        assert date.first_day() == date.last_day() == day
        if date.day == calendar.monthrange(date.year, date.month)[1]:
            assert after.day == 1 and after.month != date.month
        else:
            assert (after.year, after.month, after.day) == (date.year, date.month, date.day + 1)
    else:
        assert (after.year, after.month) != (date.year, date.month)
        assert (before.year, before.month) != (date.year, date.month)


@given(fuzzy_dates())
def test_the_orcid_json_form_parses_back_to_the_same_date(date):
    assert FuzzyDate.from_orcid(fuzzy(str(date))) == date


@given(st.integers(1, 9999), st.integers(1, 12), st.integers(1, 31))
def test_a_full_date_is_valid_exactly_when_the_calendar_has_it_within_orcids_years(
    year, month, day
):
    # ORCID's schema (common-3.0.xsd) allows years 1900 to 2100 only.
    try:
        dt.date(year, month, day)
        exists = 1900 <= year <= 2100
    except ValueError:
        exists = False
    try:
        FuzzyDate(year, month, day)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == exists
