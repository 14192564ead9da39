"""The steward console: who has access to each dataset, who was refused and why, revoking.

Only the iDs in ``STEWARD_ORCIDS`` may open it; they sign in with ORCID like anyone else.
Everything shown comes from the decision log (``AccessChecker.decision_log``) and the
decision cache; nothing here calls ORCID.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections import Counter
from dataclasses import dataclass

import redis
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)

from app.decision_log import MAX_SCAN, DecisionLogUnavailable, LogEntry, latest_of
from app.errors import GatekeeperError, InvalidOrcidId
from app.explain import explain_lines, when
from app.issuing import NoWriteToken, Withdrawn, WriteUncertain
from app.orcid_id import parse_orcid_id
from app.printable import printable
from app.web.earning import earnable
from app.web.login import csrf_ok, current_researcher

logger = logging.getLogger(__name__)
bp = Blueprint("steward", __name__, url_prefix="/steward")

# The windows a steward may look back over, as `gatekeeper decisions list --since` spells them.
WINDOWS = {"1d": 1, "7d": 7, "30d": 30, "90d": 90}
DEFAULT_WINDOW = "7d"
EXPIRING_DAYS = 30  # "expiring soon", as `gatekeeper decisions expiring` defaults to
RECENT = 25  # decisions shown with their explanation
# A spreadsheet reads a cell starting with these as a formula (OWASP's CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = (
    "decided_at",
    "orcid",
    "dataset",
    "outcome",
    "reasons",
    "access_until",
    "policy_version",
    "explanation",
)


def _gatekeeper():
    return current_app.extensions["gatekeeper"]


def is_steward() -> bool:
    """Whether the signed-in researcher is one of ``STEWARD_ORCIDS``."""
    researcher = current_researcher()
    return researcher is not None and researcher.orcid in _gatekeeper().settings.stewards


@bp.app_context_processor
def _steward_helpers():
    return {"is_steward": is_steward}


@bp.before_request
def _stewards_only():
    """403 for everyone else: signed out, with the sign-in link; signed in, saying so."""
    researcher = current_researcher()
    if researcher is None:
        target = request.path if request.method == "GET" else url_for("steward.index")
        return render_template(
            "message.html",
            title="Sign in to the steward console",
            message="The steward console is for this service's data stewards. "
            "Sign in with ORCID to open it.",
            action=("Sign in with ORCID", url_for("login.login", next=target)),
        ), 403
    if researcher.orcid not in _gatekeeper().settings.stewards:
        return render_template("steward_forbidden.html", orcid=researcher.orcid), 403
    return None


@dataclass(frozen=True, slots=True)
class Access:
    """A researcher whose latest decision for the dataset lets them in."""

    orcid: str
    until: dt.datetime  # when the decision stops holding and is taken afresh
    decided_at: dt.datetime
    policy_version: str
    cached: bool  # a cached copy holds it under the policy in force (revoking drops it)


@dataclass(frozen=True, slots=True)
class ReasonCount:
    reason: str
    count: int
    percent: int  # of the most frequent reason: the bar's length


@dataclass(frozen=True, slots=True)
class Expiring:
    orcid: str
    day: dt.date  # the last day the qualification counts
    requirement: str
    title: str
    put_code: int | None


@dataclass(frozen=True, slots=True)
class Recent:
    entry: LogEntry
    lines: list[str]


@dataclass(frozen=True, slots=True)
class Report:
    """What the console shows about one dataset over one window."""

    dataset: object  # app.policy.Dataset
    access: list[Access]
    refusals: int
    reasons: list[ReasonCount]
    expiring: list[Expiring]
    recent: list[Recent]
    truncated: bool  # the window, or the look-back, held more than MAX_SCAN decisions


def _window() -> tuple[str, int]:
    """The window asked for (``?window=7d``), or the default for anything else."""
    name = request.args.get("window", DEFAULT_WINDOW)
    if name not in WINDOWS:
        name = DEFAULT_WINDOW
    return name, WINDOWS[name]


def _words(days: int) -> str:
    return "day" if days == 1 else f"{days} days"


def _now() -> dt.datetime:
    return _gatekeeper().checker.clock()


def build_report(dataset, days: int, now: dt.datetime, *, recent: int = RECENT) -> Report:
    """The console's view of one dataset from the decision log and the cache.

    :raises DecisionLogUnavailable: when Redis cannot answer.
    """
    gk = _gatekeeper()
    checker, log, policy = gk.checker, gk.checker.decision_log, gk.checker.policy
    since = now - dt.timedelta(days=days)
    # A decision still in force may have been made before the window: who has access
    # looks back as far as any decision may hold (the dataset's cache_ttl or DECISION_TTL).
    hold = dt.timedelta(seconds=max(dataset.cache_ttl or 0, gk.settings.decision_ttl))
    look_back = min(since, now - hold)
    # MAX_SCAN at most, each: a busy dataset's 90 days must not hold a worker for long.
    held = log.entries(since=look_back, dataset=dataset.key, cap=MAX_SCAN)
    entries = (
        held if look_back == since else log.entries(since=since, dataset=dataset.key, cap=MAX_SCAN)
    )
    latest = latest_of(held)

    access, expiring = [], []
    for entry in latest:
        until = checker.cache_until(entry.decision)
        if not entry.allowed or until <= now:
            continue
        cached = checker.cached(entry.orcid, dataset.key)
        access.append(
            Access(
                entry.orcid,
                until,
                entry.decided_at,
                entry.policy_version,
                cached is not None and cached.allowed,
            )
        )
        soon = now.date() + dt.timedelta(days=EXPIRING_DAYS)
        for day, requirement, put_code, title in entry.expiring():
            if day <= soon:
                expiring.append(Expiring(entry.orcid, day, requirement, printable(title), put_code))
    access.sort(key=lambda a: a.until)
    expiring.sort(key=lambda e: (e.day, e.orcid))

    refused = [e for e in entries if e.outcome != "allow"]
    counts = Counter(reason for e in refused for reason in e.reasons)
    top = max(counts.values(), default=0)
    reasons = [
        ReasonCount(reason, count, round(100 * count / top))
        for reason, count in sorted(counts.items(), key=lambda rc: (-rc[1], rc[0]))
    ]
    shown = [
        Recent(e, [printable(line) for line in explain_lines(policy, e.decision, "steward")])
        for e in entries[:recent]
    ]
    truncated = len(held) >= MAX_SCAN or len(entries) >= MAX_SCAN
    return Report(dataset, access, len(refused), reasons, expiring, shown, truncated)


def _log_unavailable(exc: DecisionLogUnavailable):
    logger.warning("steward console: %s", exc.reason)
    return render_template(
        "message.html",
        title="The decision log is not available",
        message=f"{exc.message} Cached decisions and access are not affected; try again shortly.",
        action=("Back to the steward console", url_for("steward.index")),
    ), 503


@bp.get("/")
def index():
    """Every dataset in the policy, with its counts over the window."""
    policy = _gatekeeper().checker.policy
    window, days = _window()
    now = _now()
    try:
        reports = [build_report(d, days, now, recent=0) for d in policy.datasets.values()]
    except DecisionLogUnavailable as exc:
        return _log_unavailable(exc)
    return render_template(
        "steward.html",
        reports=reports,
        window=window,
        window_words=_words(days),
        windows=WINDOWS,
        now=now,
        when=when,
    )


@bp.get("/<name>")
def dataset(name):
    """One dataset: access now, refusals by reason, expiring qualifications, recent decisions.

    :raise 404: when the policy has no such dataset.
    """
    policy = _gatekeeper().checker.policy
    target = policy.datasets.get(name)
    if target is None:
        abort(404)
    window, days = _window()
    now = _now()
    try:
        report = build_report(target, days, now)
    except DecisionLogUnavailable as exc:
        return _log_unavailable(exc)
    issued = earnable(policy, target)
    try:
        writes = [
            w
            for w in _gatekeeper().checker.decision_log.writes(limit=200)
            if w.qualification in issued
        ][:RECENT]
    except DecisionLogUnavailable:
        writes = []
    return render_template(
        "steward_dataset.html",
        report=report,
        issued=issued,
        writes=writes,
        dataset=target,
        window=window,
        window_words=_words(days),
        windows=WINDOWS,
        now=now,
        when=when,
        expiring_days=EXPIRING_DAYS,
    )


@bp.get("/<name>.csv")
def export(name):
    """The window's decisions about one dataset as CSV, newest first.

    :raise 404: when the policy has no such dataset.
    """
    gk = _gatekeeper()
    policy = gk.checker.policy
    target = policy.datasets.get(name)
    if target is None:
        abort(404)
    window, days = _window()
    now = _now()
    try:
        entries = gk.checker.decision_log.entries(
            since=now - dt.timedelta(days=days), dataset=target.key, limit=MAX_SCAN
        )
    except DecisionLogUnavailable as exc:
        return _log_unavailable(exc)
    body = io.StringIO()
    writer = csv.writer(body, lineterminator="\r\n")  # RFC 4180
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        decision = entry.decision
        writer.writerow(
            safe_cell(value)
            for value in (
                decision.decided_at.isoformat(),
                entry.orcid,
                entry.dataset,
                entry.outcome,
                " ".join(entry.reasons),
                gk.checker.cache_until(decision).isoformat() if entry.allowed else "",
                entry.policy_version,
                "\n".join(
                    printable(line.strip()) for line in explain_lines(policy, decision, "steward")
                ),
            )
        )
    filename = f"decisions-{target.key}-{window}-{now.date().isoformat()}.csv"
    return Response(
        body.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def safe_cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: one starting like a formula gets a quote."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


@bp.post("/revoke")
def revoke():
    """Drop every cached decision about one researcher, in every worker within a second.

    :raise 400: without a valid CSRF token, or for a value that is no ORCID iD.
    """
    if not csrf_ok():
        abort(400, "This form has expired. Go back, reload the page and try again.")
    try:
        orcid = parse_orcid_id(request.form.get("orcid", ""))
    except InvalidOrcidId as exc:
        abort(400, exc.message)
    name = request.form.get("dataset", "")
    back = (
        url_for("steward.dataset", name=name)
        if name in _gatekeeper().checker.policy.datasets
        else url_for("steward.index")
    )
    if not _gatekeeper().store.forget_decisions(orcid):
        return render_template(
            "message.html",
            title="Not revoked",
            message="Redis did not confirm that the cached decisions were dropped (it did "
            "not answer, or no replica confirmed it in time): try again shortly.",
            action=("Back", back),
        ), 503
    logger.info(
        "revoked",
        extra={"event": "steward_revoke", "orcid": orcid, "steward": current_researcher().orcid},
    )
    flash(
        f"Cached decisions for {orcid} were dropped. Their next request is decided "
        "afresh from their ORCID record."
    )
    return redirect(back, code=303)


@bp.post("/issue")
def issue():
    """Write (or renew) a steward-granted qualification to a researcher's ORCID record.

    :raise 400: without a valid CSRF token, for a value that is no ORCID iD, or for a
        qualification this service does not issue on a steward's word.
    """
    orcid, rule, back = _write_form()
    if rule.issue.accept_terms is not None:
        abort(400, "The researcher earns this by accepting the terms; a steward cannot.")
    return _written(back, lambda issuer, by: issuer.issue(orcid, rule, by=by), orcid, rule)


@bp.post("/withdraw")
def withdraw():
    """Delete this service's item for a qualification from a researcher's ORCID record;
    their cached decisions go too, so access ends at their next request.

    :raise 400: as for ``issue``.
    """
    orcid, rule, back = _write_form()
    return _written(back, lambda issuer, by: issuer.withdraw(orcid, rule, by=by), orcid, rule)


def _write_form():
    if not csrf_ok():
        abort(400, "This form has expired. Go back, reload the page and try again.")
    try:
        orcid = parse_orcid_id(request.form.get("orcid", ""))
    except InvalidOrcidId as exc:
        abort(400, exc.message)
    policy = _gatekeeper().checker.policy
    target = policy.datasets.get(request.form.get("dataset", ""))
    if target is None:
        abort(400, "No such dataset.")
    rule = earnable(policy, target).get(request.form.get("qualification", ""))
    if rule is None:
        abort(400, "This service does not issue that qualification for this dataset.")
    return orcid, rule, url_for("steward.dataset", name=target.key)


def _written(back, write, orcid, rule):
    steward = current_researcher().orcid
    try:
        result = write(_gatekeeper().issuer, f"steward {steward}")
    except NoWriteToken:
        return render_template(
            "message.html",
            title="No permission to write",
            message=f"{orcid} has not allowed this service to change their ORCID record "
            "(or ORCID has revoked it). They can allow it on the dataset page.",
            action=("Back", back),
        ), 409
    except (GatekeeperError, redis.RedisError) as exc:
        message = getattr(exc, "message", None) or "Redis did not answer."
        title = "ORCID may have taken it" if isinstance(exc, WriteUncertain) else None
        return render_template(
            "message.html",
            title=title or "ORCID did not take it",
            message=message,
            action=("Back", back),
        ), 502
    if isinstance(result, Withdrawn):
        if result.put_codes:
            codes = ", ".join(map(str, result.put_codes))
            flash(f"Withdrew {rule.key} (put-code {codes}) from {orcid}'s ORCID record.")
        else:
            flash(f"{orcid}'s record has no {rule.key} of ours.")
    else:
        flash(
            f"{result.kind.capitalize()} {rule.key} on {orcid}'s ORCID record (put-code "
            f"{result.put_code}, valid until {result.valid_until})."
        )
    if not result.decisions_dropped:
        flash(
            f"Their cached decisions could not be dropped (Redis did not answer): the change "
            f"may take up to {_gatekeeper().settings.decision_ttl // 60} minutes to apply. "
            "Revoke their cached decisions once Redis answers."
        )
    return redirect(back, code=303)
