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

import redis

from app.decision_log import WriteEntry
from app.errors import GatekeeperError, OrcidError, OrcidUnavailable, TokenInvalid
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


class WriteUncertain(OrcidUnavailable):
    """ORCID did not say whether it took a new item, and the record could not be read to
    find out: it may be there."""

    reason = "write_uncertain"
    message = (
        "ORCID did not say whether it added the item, and the record could not be read "
        "to find out: look at the ORCID record. Trying again will not add it twice."
    )


class NotIssuable(GatekeeperError):
    reason = "not_issuable"
    message = "This service does not issue that qualification (the policy has no issue: for it)."


@dataclass(frozen=True, slots=True)
class OwnItem:
    """An item on the record that counts as ours for a rule: what the record shows of it."""

    put_code: int
    visibility: str | None
    end: dt.date | None
    current: bool  # carries the rule's ``self`` external ID for this iD (and terms version)


@dataclass(frozen=True, slots=True)
class IssueResult:
    kind: str  # "issued" (a new item) or "renewed" (ours, updated)
    put_code: int
    visibility: str | None  # as ORCID gave it; None when the item could not be read back
    valid_until: dt.date
    decisions_dropped: bool = True  # False: a cached refusal may stand until it expires


@dataclass(frozen=True, slots=True)
class Withdrawn:
    put_codes: tuple[int, ...]  # the items deleted; empty when there was none of ours
    decisions_dropped: bool  # False: a cached allow may stand until it expires


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

    def written_by_us(self, item) -> bool:
        """Whether ``decide()`` would take the item as self-issued: written by our client
        itself, on nobody else's behalf (no assertion origin), from a source ORCID names."""
        if not isinstance(item, Qualification):
            return False
        source = item.source
        return (
            not source.unknown
            and source.source_client_id == self.client_id
            and source.assertion_origin_client_id is None
            and source.assertion_origin_orcid is None
        )

    def find_ours(self, orcid: str, token: str, rule: QualificationRule) -> list[OwnItem]:
        """Every item of ours that counts for ``rule``, as ``decide()`` identifies it (our
        client, and the rule's title or ID), whatever terms version it was written for."""
        return [item for item, counts in self._ours(orcid, token, rule) if counts]

    def find_own(self, orcid: str, token: str, rule: QualificationRule) -> OwnItem | None:
        """Our item for ``rule`` with this iD's current ``self`` external ID: the one a
        renewal updates."""
        current = [item for item in self.find_ours(orcid, token, rule) if item.current]
        return min(current, key=lambda i: i.put_code) if current else None

    def _ours(self, orcid, token, rule) -> list[tuple[OwnItem, bool]]:
        """Each item our client wrote on the record, with whether it counts for ``rule``."""
        issue = _issue_of(rule)
        found = []
        for item in self.reader.read_qualifications(orcid, self.written_by_us, token=token):
            if not self.written_by_us(item):
                continue
            current = issue.wrote(item, orcid)
            end = item.end.last_day() if item.end is not None else None
            own = OwnItem(item.put_code, item.visibility, end, current)
            found.append((own, rule.is_candidate(item)))
        return found

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
                put_code = self._add(orcid, token, rule, today)
                kind = "issued"
            else:
                body = qualification_body(rule, orcid, today, put_code=own.put_code)
                self.writer.update(orcid, token, own.put_code, body)
                put_code, kind = own.put_code, "renewed"
        # From here the write has happened: nothing may fail it, and it is logged first.
        written = self._read_back(orcid, token, rule, put_code)
        valid_until = today + dt.timedelta(days=issue.valid_for_days)
        visibility = written.visibility if written else None
        self._log(
            WriteEntry(
                kind=kind,
                orcid=orcid,
                qualification=rule.key,
                put_code=put_code,
                by=by,
                at=self.clock(),
                visibility=visibility,
                valid_until=valid_until,
                terms_version=issue.accept_terms.version if issue.accept_terms else None,
            )
        )
        return IssueResult(kind, put_code, visibility, valid_until, self._forget(orcid))

    def _add(self, orcid, token, rule, today) -> int:
        """POST our item; its put-code. A write ORCID may have taken without saying so
        (409/9021, a 201 without Location, a timeout) is looked for on the record."""
        try:
            return self.writer.add(orcid, token, qualification_body(rule, orcid, today))
        except (AlreadyAdded, OrcidUnavailable) as exc:
            failure = exc
        except WriteError as exc:
            if exc.status != 201:
                raise
            failure = exc
        try:
            landed = self.find_own(orcid, token, rule)
        except OrcidError as exc:
            if isinstance(failure, AlreadyAdded) or isinstance(exc, TokenInvalid):
                raise  # a refused token is forgotten (NoWriteToken), as for any call
            # It may have landed: the next check reads the record afresh, and the
            # researcher is told we cannot say (not "nothing was written").
            self._forget(orcid)
            logger.warning("a write may have landed, and the record could not be read back")
            raise WriteUncertain() from exc
        if landed is not None:
            return landed.put_code
        if isinstance(failure, AlreadyAdded):
            # Ours by its ID, but not an item we can read back or that counts (written on
            # someone's behalf, say): renewing it would not open anything.
            raise WriteError(
                "ORCID says the item is already on the record, but we cannot read it back "
                "as ours to renew it.",
                status=409,
                code=9021,
            ) from None
        raise failure

    def withdraw(
        self, orcid: str, rule: QualificationRule, *, by: str, put_code: int | None = None
    ) -> Withdrawn:
        """Delete every item of ours that counts for ``rule`` (or only ``put_code``); the
        researcher's cached decisions go either way.

        :raises NoWriteToken, OrcidError: as for ``issue``.
        :raises WriteError: ``put_code`` is an item of ours for another qualification
            (nothing is deleted), or ORCID refused: ``NotOurItem`` (9010) for an item
            another source added.
        """
        _issue_of(rule)
        token = self.token_for(orcid)
        deleted = []
        try:
            with self._forgetting_refused_token(orcid):
                ours = self._ours(orcid, token, rule)
                if put_code is None:
                    targets = [item.put_code for item, counts in ours if counts]
                elif any(item.put_code == put_code and not counts for item, counts in ours):
                    raise WriteError(
                        f"put-code {put_code} is this service's item for another "
                        f"qualification, not {rule.key}; nothing was deleted."
                    )
                else:
                    targets = [put_code]  # ours, or ORCID says whose (9010)
                for target in targets:
                    if self.writer.delete(orcid, token, target):
                        deleted.append(target)
                        self._log(
                            WriteEntry(
                                kind="withdrawn",
                                orcid=orcid,
                                qualification=rule.key,
                                put_code=target,
                                by=by,
                                at=self.clock(),
                            )
                        )
        finally:
            dropped = self._forget(orcid)
        return Withdrawn(tuple(deleted), dropped)

    def _forget(self, orcid: str) -> bool:
        """Drop the researcher's cached decisions; False when Redis did not confirm it."""
        try:
            return self.forget_decisions(orcid) is not False
        except redis.RedisError:
            logger.warning("could not drop cached decisions after a write", extra={"orcid": orcid})
            return False

    def _read_back(self, orcid, token, rule, put_code) -> OwnItem | None:
        """Our item as ORCID now shows it (for its visibility); None if it cannot say."""
        try:
            ours = self.find_ours(orcid, token, rule)
        except GatekeeperError as exc:
            logger.warning("could not read back a written item", extra={"reason": exc.reason})
            return None
        return next((item for item in ours if item.put_code == put_code), None)

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
