"""ORCID iDs: parsing the bare or URI form and checking the ISO 7064 MOD 11-2 digit."""

from __future__ import annotations

import re

from app.errors import InvalidOrcidId

# [0-9], not \d: \d also matches Arabic-Indic, fullwidth and other Unicode digits.
_BARE = re.compile(r"^([0-9]{4})-([0-9]{4})-([0-9]{4})-([0-9]{3}[0-9X])\Z")
# ORCID's own URI forms; sandbox iDs look the same on another host.
_URI_PREFIXES = ("https://orcid.org/", "http://orcid.org/", "https://sandbox.orcid.org/")


def check_digit(first15: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 15 digits of an iD."""
    total = 0
    for digit in first15:
        total = (total + int(digit)) * 2
    result = (12 - total % 11) % 11
    return "X" if result == 10 else str(result)


def parse_orcid_id(value: str) -> str:
    """Return the canonical bare iD (``0000-0002-1825-0097``) for a bare iD or its URI.

    :raises InvalidOrcidId: when the format or the check digit is wrong.
    """
    if not isinstance(value, str):
        raise InvalidOrcidId()
    text = value.strip()
    for prefix in _URI_PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
            break
    text = text.upper()  # a lower-case x check digit is a common slip
    if not _BARE.match(text):
        raise InvalidOrcidId(
            f"{value!r} is not an ORCID iD: expected 16 digits in four groups, "
            "like 0000-0002-1825-0097"
        )
    digits = text.replace("-", "")
    if check_digit(digits[:15]) != digits[15]:
        raise InvalidOrcidId(f"{value!r} is not an ORCID iD: its check digit is wrong")
    return text


def is_valid_orcid_id(value: str) -> bool:
    try:
        parse_orcid_id(value)
    except InvalidOrcidId:
        return False
    return True
