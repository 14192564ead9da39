"""Typed errors: each carries a stable machine ``reason`` and a sentence for people.

Adapters translate foreign exceptions (requests, redis, yaml) into these at their
boundary, so views and commands only ever handle a ``GatekeeperError``.
"""

from __future__ import annotations

import re


class GatekeeperError(Exception):
    """Base class: ``reason`` is a stable code, ``message`` a sentence for people."""

    reason = "error"
    message = "Something went wrong."

    def __init__(self, message: str | None = None):
        if message is not None:
            self.message = message
        super().__init__(self.message)


class ConfigError(GatekeeperError):
    """A setting is missing or contradictory; the message names the variable."""

    reason = "config_error"


class InvalidOrcidId(GatekeeperError):
    reason = "invalid_orcid_id"
    message = "That is not a valid ORCID iD."


class UnknownDataset(GatekeeperError):
    reason = "unknown_dataset"
    message = "There is no such dataset in the policy."


class PolicyError(GatekeeperError):
    """The trust policy could not be loaded; ``problems`` lists every one found."""

    reason = "policy_error"

    def __init__(self, problems: list):
        self.problems = list(problems)
        first = str(self.problems[0]) if self.problems else "invalid policy"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{first}{more}")


# --- reading ORCID ----------------------------------------------------------------------


class OrcidError(GatekeeperError):
    """The ORCID record could not be read; a decision made now must refuse."""

    reason = "orcid_error"
    message = "We could not read your ORCID record."


class RecordNotFound(OrcidError):
    reason = "record_not_found"
    message = "ORCID has no record with this iD."


class TokenInvalid(OrcidError):
    reason = "token_invalid"
    message = (
        "ORCID no longer accepts our permission to read your record "
        "(it may have been revoked); please sign in again."
    )


class RecordDeprecated(OrcidError):
    reason = "record_deprecated"
    message = "This ORCID record has been merged into another one; please use your primary iD."

    def __init__(self, primary_orcid: str | None = None):
        self.primary_orcid = primary_orcid
        message = None
        if primary_orcid:
            message = (
                f"This ORCID record has been merged into {primary_orcid}; "
                "please sign in with that iD."
            )
        super().__init__(message)


class RecordLocked(OrcidError):
    reason = "record_locked"
    message = "Your ORCID record is locked, so we cannot read your qualifications."


class RecordDeactivated(OrcidError):
    reason = "record_deactivated"
    message = "This ORCID record has been deactivated."


class RecordUnclaimed(OrcidError):
    reason = "record_unclaimed"
    message = "This ORCID record has not been claimed by its owner yet."


class AccessForbidden(OrcidError):
    reason = "access_forbidden"
    message = "ORCID did not let us read this part of your record (it may not be public)."


class OrcidUnavailable(OrcidError):
    reason = "orcid_unavailable"
    message = "ORCID is not answering right now; please try again in a few minutes."


class MalformedResponse(OrcidError):
    reason = "malformed_response"
    message = "ORCID sent an answer we could not understand."


class TooManyCandidates(OrcidError):
    """More items could count than one decision may read: refused, so one record with
    thousands of look-alike entries cannot spend ORCID's rate limit for everyone."""

    reason = "too_many_candidates"

    def __init__(self, found: int, limit: int):
        super().__init__(
            f"Your ORCID record has {found} entries that could be this dataset's "
            f"qualifications, and we read at most {limit}. Please remove duplicates from "
            "your ORCID record, or contact the data steward."
        )
        self.found, self.limit = found, limit


_CONFLICTS = {9018: RecordLocked, 9044: RecordDeactivated, 9036: RecordUnclaimed}
_ORCID_ID = re.compile(r"(\d{4}-\d{4}-\d{4}-\d{3}[\dX])")
# "This account is deprecated. Please refer to account: https://orcid.org/{primary}. ORCID ..."
_PRIMARY = re.compile(r"refer to account:\s*(?:https?://[^/\s]+/)?(\d{4}-\d{4}-\d{4}-\d{3}[\dX])")


def error_from_orcid(status: int, body, location: str | None = None) -> OrcidError:
    """Turn an ORCID error answer (status and parsed JSON body) into a typed error.

    ORCID's record API answers with ``{"response-code", "developer-message",
    "error-code", ...}``; its OAuth layer with ``{"error", "error_description"}``.
    """
    body = body if isinstance(body, dict) else {}
    code = body.get("error-code")
    developer = str(body.get("developer-message") or "")
    if status == 301 or code == 9007:
        primary = _PRIMARY.search(developer)
        found = _ORCID_ID.findall(location or "")
        return RecordDeprecated(primary[1] if primary else (found[-1] if found else None))
    if status == 401:
        return TokenInvalid()
    if status == 403:
        return AccessForbidden()
    if status == 404:
        return RecordNotFound()
    if status == 409 and code in _CONFLICTS:
        return _CONFLICTS[code]()
    if status == 429 or status >= 500:
        return OrcidUnavailable()
    detail = f" (HTTP {status}" + (f", ORCID error {code})" if code else ")")
    return OrcidError(f"ORCID refused to give us the record{detail}.")
