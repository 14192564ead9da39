"""Issuing: this service adds, renews and withdraws its own qualifications on ORCID records.

A policy rule with an ``issue:`` section says what to write. ``Issuer`` finds our item
(the one whose source is our client and whose ``self`` external ID is the rule's), adds
it with POST when there is none, renews it with PUT when there is (so writing twice
leaves one item), reads it back for the visibility ORCID gave it, drops the researcher's
cached decisions so that the next check reads the record again, and logs each write in
the decision log. The researcher's write token comes from ``WriteTokens``; when ORCID
says it no longer works, it is forgotten.

No Flask here: the researcher's pages and the steward's commands both call it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from app.decision_log import WriteEntry
from app.errors import GatekeeperError, TokenInvalid
from app.orcid_writer import AlreadyAdded, WriteError, WriteNotPermitted, qualification_body
from app.policy.model import QualificationRule
from app.qualifications import Qualification
from app.write_tokens import WriteTokens

logger = logging.getLogger(__name__)


class NoWriteToken(GatekeeperError):
    reason = "no_write_token"
    message = (
        "This researcher has not allowed this service to add to their ORCID record "
        "(no token with /activities/update is stored), or ORCID has since revoked it."
    )


class NotIssuable(GatekeeperError):
    reason = "not_issuable"
    message = "This service does not issue that qualification (the policy has no issue: for it)."


@dataclass(frozen=True, slots=True)
class OwnItem:
    """Our item on the record: what the record shows of it."""

    put_code: int
    visibility: str | None
    end: dt.date | None


@dataclass(frozen=True, slots=True)
class IssueResult:
    kind: str  # "issued" (a new item) or "renewed" (ours, updated)
    put_code: int
    visibility: str | None  # as ORCID gave it; None when the item could not be read back
    valid_until: dt.date


class Issuer:
    def __init__(
        self,
        *,
        reader,  # OrcidClient: reads the record with the researcher's token
        writer,  # OrcidWriter
        tokens: WriteTokens,
        client_id: str,
        decision_log,
        forget_decisions: Callable[[str], object],
        clock=lambda: dt.datetime.now(dt.UTC),
    ):
        self.reader, self.writer, self.tokens = reader, writer, tokens
        self.client_id = client_id
        self.decision_log = decision_log
        self.forget_decisions = forget_decisions
        self.clock = clock

    def token_for(self, orcid: str) -> str:
        """The researcher's write token.

        :raises NoWriteToken: when none that can write is stored.
        :raises redis.RedisError: when Redis cannot answer.
        """
        token = self.tokens.get(orcid)
        if token is None or not token.can_write:
            raise NoWriteToken()
        return token.access_token

    def find_own(self, orcid: str, token: str, rule: QualificationRule) -> OwnItem | None:
        """Our item for ``rule`` on the record, by our client ID and its ``self`` external ID."""
        issue = _issue_of(rule)
        wanted_type = issue.external_id_type.casefold()
        wanted_value = issue.external_id_value(orcid)

        def ours(item) -> bool:
            return (
                isinstance(item, Qualification)
                and item.source.source_client_id == self.client_id
                and any(
                    e.relationship == "self"
                    and e.type.casefold() == wanted_type
                    and e.value == wanted_value
                    for e in item.external_ids
                )
            )

        items = [i for i in self._read(orcid, token, ours) if ours(i)]
        if not items:
            return None
        item = min(items, key=lambda i: i.put_code)
        end = item.end.last_day() if item.end is not None else None
        return OwnItem(item.put_code, item.visibility, end)

    def issue(self, orcid: str, rule: QualificationRule, *, by: str) -> IssueResult:
        """Add our item for ``rule``, or renew it (PUT) when it is there already.

        :raises NoWriteToken: no usable token is stored (also once ORCID refuses it).
        :raises WriteError: ORCID refused the write, with its code.
        :raises OrcidError: the record could not be read (ORCID down, say).
        """
        issue = _issue_of(rule)
        token = self.token_for(orcid)
        today = self.clock().date()
        with self._forgetting_refused_token(orcid):
            own = self.find_own(orcid, token, rule)
            if own is None:
                try:
                    put_code = self.writer.add(orcid, token, qualification_body(rule, orcid, today))
                    kind = "issued"
                except AlreadyAdded:
                    # Added meanwhile (another tab, a steward), or there but not readable
                    # to us: renew the one we can find, or say so.
                    own = self.find_own(orcid, token, rule)
                    if own is None:
                        raise WriteError(
                            "ORCID says the item is already on the record, but we cannot "
                            "read it back to renew it.",
                            status=409,
                            code=9021,
                        ) from None
            if own is not None:
                body = qualification_body(rule, orcid, today, put_code=own.put_code)
                self.writer.update(orcid, token, own.put_code, body)
                put_code, kind = own.put_code, "renewed"
            written = self._read_back(orcid, token, rule, put_code)
        valid_until = today + dt.timedelta(days=issue.valid_for_days)
        self.forget_decisions(orcid)
        version = issue.accept_terms.version if issue.accept_terms is not None else None
        self._log(
            WriteEntry(
                kind=kind,
                orcid=orcid,
                qualification=rule.key,
                put_code=put_code,
                by=by,
                at=self.clock(),
                visibility=written.visibility if written else None,
                valid_until=valid_until,
                terms_version=version,
            )
        )
        return IssueResult(kind, put_code, written.visibility if written else None, valid_until)

    def withdraw(
        self, orcid: str, rule: QualificationRule, *, by: str, put_code: int | None = None
    ) -> int | None:
        """Delete our item for ``rule`` (or the item ``put_code``); its put-code, or None
        when there was none. The researcher's cached decisions go either way.

        :raises NoWriteToken, WriteError, OrcidError: as for ``issue``; ``NotOurItem``
            (9010) when ``put_code`` names an item another source added.
        """
        _issue_of(rule)
        token = self.token_for(orcid)
        with self._forgetting_refused_token(orcid):
            if put_code is None:
                own = self.find_own(orcid, token, rule)
                put_code = own.put_code if own is not None else None
            deleted = put_code is not None and self.writer.delete(orcid, token, put_code)
        self.forget_decisions(orcid)
        if not deleted:
            return None
        self._log(
            WriteEntry(
                kind="withdrawn",
                orcid=orcid,
                qualification=rule.key,
                put_code=put_code,
                by=by,
                at=self.clock(),
            )
        )
        return put_code

    def _read(self, orcid, token, wanted):
        return self.reader.read_qualifications(orcid, wanted, token=token)

    def _read_back(self, orcid, token, rule, put_code) -> OwnItem | None:
        """Our item as ORCID now shows it (for its visibility); None if it cannot say."""
        try:
            own = self.find_own(orcid, token, rule)
        except GatekeeperError as exc:
            logger.warning("could not read back a written item", extra={"reason": exc.reason})
            return None
        return own if own is not None and own.put_code == put_code else None

    def _forgetting_refused_token(self, orcid: str):
        return _ForgetRefusedToken(self.tokens, orcid)

    def _log(self, entry: WriteEntry) -> None:
        if not self.decision_log.append_write(entry):
            # The write happened; its trace must not vanish without a word.
            logger.error(
                "a write to an ORCID record was not logged (Redis did not take it)",
                extra={"event": "write", **entry.to_dict()},
            )
        logger.info("wrote to an ORCID record", extra={"event": "write", **entry.to_dict()})


class _ForgetRefusedToken:
    """A context in which ORCID's refusal of the token forgets it and says NoWriteToken."""

    def __init__(self, tokens: WriteTokens, orcid: str):
        self.tokens, self.orcid = tokens, orcid

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, (WriteNotPermitted, TokenInvalid)):
            logger.info("ORCID refused a stored write token; forgetting it")
            self.tokens.delete(self.orcid)
            raise NoWriteToken() from exc
        return False


def _issue_of(rule: QualificationRule):
    if rule.issue is None:
        raise NotIssuable(f"The policy does not issue {rule.key!r}: it has no issue: section.")
    return rule.issue
