"""Writing qualifications to ORCID records through the Member API (issuing).

ORCID's write facts (../shared/orcid-api.md; ORCID-Source MemberV3ApiServiceDelegatorImpl,
OrcidCoreExceptionMapper): ``POST /{orcid}/qualification`` answers 201 with the new item's
URL in ``Location`` and an empty body; ``PUT /{orcid}/qualification/{put-code}`` needs the
same put-code in its body; ``DELETE`` answers 204. Errors carry an ``error-code``: 9021
(409, this source already has an item with that ``self`` external ID), 9010 (403, the
item is not this client's), 9024 (400, a put-code in a POST), 9046 and kin (400, the
organisation). A token without ``/activities/update`` is refused with 403/9038, one for
another record with 401/9017, a revoked or expired one with 401 ``invalid_token``.

Each call is one HTTP request with a timeout and no retry: a write that timed out may
have landed, and the caller re-reads the record rather than write again blindly.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from urllib.parse import urlsplit

import requests

from app.errors import GatekeeperError, OrcidUnavailable
from app.http_deadlines import ending_by, session_with_deadlines
from app.orcid_client import TRANSPORT_ERRORS, read_body
from app.policy.model import QualificationRule

logger = logging.getLogger(__name__)

ORCID_JSON = "application/vnd.orcid+json"
WRITE_TIMEOUT = 10.0  # seconds per write: a person waits on it, no proxy does
_PUT_CODE = re.compile(
    r"/([0-9X-]{19})/qualification/([0-9]{1,18})/?\Z"
)  # int() refuses 4,300 digits


def _put_code_in(location: str, orcid: str) -> int | None:
    """The put-code a 201's ``Location`` names on ``orcid``'s record; None for one that
    names another record (or none): it must not be logged as the item we added."""
    found = _PUT_CODE.search(urlsplit(location).path)
    if found is None or found[1] != orcid:
        return None
    return int(found[2])


# ORCID's answers to a write are a Location or a short error: anything longer is no answer.
MAX_ANSWER_BYTES = 256 * 1024


class WriteError(GatekeeperError):
    """ORCID did not take a write; ``code`` is ORCID's error code when it gave one."""

    reason = "write_refused"
    message = "ORCID did not accept the change to the record."

    def __init__(self, message: str | None = None, *, status: int = 0, code: int | None = None):
        super().__init__(message)
        self.status, self.code = status, code


class AlreadyAdded(WriteError):
    """409/9021: this client already has an item with the same ``self`` external ID."""

    reason = "already_added"
    message = "The qualification is already on the ORCID record."


class NotOurItem(WriteError):
    """403/9010: the item was added by another source, so only it may change it."""

    reason = "not_our_item"
    message = "ORCID says this item was not added by this service, so we may not change it."


class WriteNotPermitted(WriteError):
    """401 or 403 without an error code of ours: the token is revoked, expired or lacks
    ``/activities/update``."""

    reason = "write_not_permitted"
    message = (
        "ORCID no longer lets this service add to the record: the permission was revoked, "
        "has expired, or was never given."
    )


def qualification_body(
    rule: QualificationRule, orcid: str, today: dt.date, put_code: int | None = None
) -> dict:
    """The ORCID v3.0 JSON body that writes ``rule``'s qualification to ``orcid``'s record.

    The shape of ORCID's write sample (orcid-model ``write_samples/qualification-3.0.json``):
    valid from ``today`` through ``today + valid_for_days``, the organisation with its ROR
    ID as disambiguated organisation, and one external ID with relationship ``self``.
    ORCID sets the source and the visibility itself, so the body names neither. A PUT
    carries the item's ``put_code``; a POST must not (9024).

    :raises ValueError: for a rule without ``issue``.
    """
    issue = rule.issue
    if issue is None:
        raise ValueError(f"qualification {rule.key!r} has no issue section")
    org = issue.organization
    body = {
        "role-title": issue.title,
        "start-date": _fuzzy_date(today),
        "end-date": _fuzzy_date(today + dt.timedelta(days=issue.valid_for_days)),
        "organization": {
            "name": org.name,
            "address": {"city": org.city, "country": org.country},
            "disambiguated-organization": {
                "disambiguated-organization-identifier": f"https://ror.org/{org.ror}",
                "disambiguation-source": "ROR",
            },
        },
    }
    if put_code is not None:
        body = {"put-code": put_code, **body}
    if issue.url is not None:
        body["url"] = {"value": issue.url}
    body["external-ids"] = {
        "external-id": [
            {
                "external-id-type": issue.external_id_type,
                "external-id-value": issue.external_id_value(orcid),
                "external-id-relationship": "self",
            }
        ]
    }
    return body


def _fuzzy_date(day: dt.date) -> dict:
    return {
        "year": {"value": f"{day.year:04d}"},
        "month": {"value": f"{day.month:02d}"},
        "day": {"value": f"{day.day:02d}"},
    }


class OrcidWriter:
    """POST, PUT and DELETE of qualifications with a researcher's write token."""

    def __init__(self, api_url: str, timeout: float = WRITE_TIMEOUT, session=None):
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self.session = session or session_with_deadlines()

    def add(self, orcid: str, token: str, body: dict) -> int:
        """Add an item; its put-code, from ``Location``.

        :raises AlreadyAdded: 409/9021, the item is there already.
        :raises WriteNotPermitted: the token is revoked, expired or cannot write.
        :raises OrcidUnavailable: ORCID failed or did not answer in time.
        :raises WriteError: any other refusal, with ORCID's code.
        """
        response = self._send("POST", f"/{orcid}/qualification", token, body)
        if response.status_code != 201:
            raise _refusal(response)
        put_code = _put_code_in(response.headers.get("Location", ""), orcid)
        if put_code is None:
            # Said as for no Location: the issuer then looks for the item on the record.
            raise WriteError(
                "ORCID added the item but did not say where (no Location on this record).",
                status=201,
            )
        return put_code

    def update(self, orcid: str, token: str, put_code: int, body: dict) -> None:
        """Replace our item ``put_code`` with ``body`` (which carries the same put-code).

        :raises NotOurItem: 403/9010.
        :raises WriteNotPermitted, OrcidUnavailable, WriteError: as for ``add``.
        """
        response = self._send("PUT", f"/{orcid}/qualification/{put_code}", token, body)
        if response.status_code != 200:
            raise _refusal(response)

    def delete(self, orcid: str, token: str, put_code: int) -> bool:
        """Delete our item; False when ORCID has no such item any more (404).

        :raises NotOurItem: 403/9010.
        :raises WriteNotPermitted, OrcidUnavailable, WriteError: as for ``add``.
        """
        response = self._send("DELETE", f"/{orcid}/qualification/{put_code}", token, None)
        if response.status_code == 404:
            return False
        if response.status_code not in (200, 204):
            raise _refusal(response)
        return True

    def _send(self, method: str, path: str, token: str, body: dict | None):
        """ORCID's answer, its body read within ``timeout`` in all and at most
        ``MAX_ANSWER_BYTES`` long.

        :raises OrcidUnavailable: no answer in time, or one too long to be ORCID's.
        """
        headers = {"Accept": ORCID_JSON, "Authorization": f"Bearer {token}"}
        if body is not None:
            headers["Content-Type"] = ORCID_JSON
        deadline = time.monotonic() + self.timeout
        try:
            with ending_by(deadline):
                response = self.session.request(
                    method,
                    self.api_url + path,
                    json=body,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                    stream=True,
                )
                answer = read_body(response, deadline, MAX_ANSWER_BYTES, self.timeout)
        except TRANSPORT_ERRORS as exc:  # urllib3's too: a reset while the body is read
            logger.warning(
                "ORCID write failed", extra={"method": method, "error": type(exc).__name__}
            )
            raise OrcidUnavailable() from None
        if answer is None:
            logger.warning("ORCID write failed", extra={"method": method, "error": "answer"})
            raise OrcidUnavailable()
        response._content = answer  # read here, bounded; .json() and .text take it
        return response


def _refusal(response: requests.Response) -> Exception:
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    code = body.get("error-code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    status = response.status_code
    if status == 409 and code == 9021:
        return AlreadyAdded(status=status, code=code)
    if code == 9010:
        return NotOurItem(status=status, code=code)
    if status == 401 or code in (9017, 9038) or (status == 403 and code is None):
        return WriteNotPermitted(status=status, code=code)
    if status == 429 or status >= 500:
        return OrcidUnavailable()
    # The developer message names what ORCID disliked (9046: the organisation, ...);
    # it is ORCID's text about our request, never a token, so it may be shown to a steward.
    detail = str(body.get("developer-message") or body.get("user-message") or "")[:300]
    label = f"HTTP {status}" + (f", ORCID error {code}" if code else "")
    return WriteError(
        f"ORCID refused the write ({label})" + (f": {detail}" if detail else "."),
        status=status,
        code=code,
    )
