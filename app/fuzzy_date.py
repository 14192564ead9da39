"""ORCID fuzzy dates: a year, a year and month, or a full date.

A partial date stands for a span: as a start it means the first day it covers, as an
end the last day (ORCID end dates are inclusive).
"""

from __future__ import annotations

import calendar
import datetime as dt
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

        :raises ValueError: when the shape or the numbers are wrong.
        """
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("a fuzzy date must be an object")

        def part(name):
            wrapped = value.get(name)
            if wrapped is None:
                return None
            if not isinstance(wrapped, dict) or wrapped.get("value") is None:
                raise ValueError(f"fuzzy date {name} must be {{'value': '...'}}")
            text = str(wrapped["value"]).strip()
            if not text.isdigit():
                raise ValueError(f"fuzzy date {name} {text!r} is not a number")
            return int(text)

        year = part("year")
        if year is None:
            return None  # ORCID writes {"year": null, ...} for "no date"
        return cls(year, part("month"), part("day"))
