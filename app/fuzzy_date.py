"""ORCID fuzzy dates: a year, a year and month, or a full date.

A partial date stands for a span: as a start it means the first day it covers, as an
end the last day (ORCID end dates are inclusive).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

# ORCID's schema (common-3.0.xsd) allows years 1900 to 2100; this range also keeps
# the day before a start and the day after an end inside datetime.date's range.
FIRST_YEAR, LAST_YEAR = 1900, 2100


@dataclass(frozen=True, slots=True)
class FuzzyDate:
    year: int
    month: int | None = None
    day: int | None = None

    def __post_init__(self):
        if self.day is not None and self.month is None:
            raise ValueError("a fuzzy date with a day needs a month")
        if self.month is not None and not 1 <= self.month <= 12:
            raise ValueError(f"month {self.month} is out of range")
        if not FIRST_YEAR <= self.year <= LAST_YEAR:
            raise ValueError(f"year {self.year} is out of range ({FIRST_YEAR} to {LAST_YEAR})")
        if self.day is not None:
            dt.date(self.year, self.month, self.day)  # raises ValueError for 2023-02-29

    def first_day(self) -> dt.date:
        return dt.date(self.year, self.month or 1, self.day or 1)

    def last_day(self) -> dt.date:
        if self.day is not None:
            return dt.date(self.year, self.month, self.day)
        month = self.month or 12
        return dt.date(self.year, month, calendar.monthrange(self.year, month)[1])

    def __str__(self) -> str:
        if self.month is None:
            return f"{self.year:04d}"
        if self.day is None:
            return f"{self.year:04d}-{self.month:02d}"
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"

    @classmethod
    def from_orcid(cls, value) -> FuzzyDate | None:
        """Parse ORCID's ``{"year": {"value": "2024"}, "month": ..., "day": ...}`` (or null).

        A date object whose members are all null means "no date" (ORCID's mapper writes
        one for an empty date column). A month or day without a year is malformed: the
        schema requires the year (common-3.0.xsd ``fuzzy-date``), and reading such a
        date as "no date" would make an end date never expire.

        :raises ValueError: when the shape or the numbers are wrong.
        """
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("a fuzzy date must be an object")
        unknown = set(value) - {"year", "month", "day"}
        if unknown:
            raise ValueError(f"a fuzzy date has unknown members {sorted(unknown)}")
        if not value:  # ORCID writes its members, null or not; {} is no ORCID date
            raise ValueError("a fuzzy date without members")
        year, month, day = (_part(value, name) for name in ("year", "month", "day"))
        if year is None:
            if month is not None or day is not None:
                raise ValueError("a fuzzy date with a month or day needs a year")
            return None
        return cls(year, month, day)


# ASCII digits only: str.isdigit() and int() also accept other scripts' digits ("٢٠٢٥").
_DIGITS = re.compile(r"[0-9]{1,4}")


def _part(value: dict, name: str) -> int | None:
    wrapped = value.get(name)
    if wrapped is None:
        return None
    if not isinstance(wrapped, dict) or set(wrapped) != {"value"}:
        raise ValueError(f"fuzzy date {name} must be {{'value': '...'}}")
    text = wrapped["value"]
    if not isinstance(text, str) or not _DIGITS.fullmatch(text):
        raise ValueError(f"fuzzy date {name} {text!r} is not a number in ASCII digits")
    return int(text)
