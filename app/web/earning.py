"""Earning a qualification here: accept the terms, let us write to ORCID, open the dataset.

The flow, for a missing requirement whose rule has ``issue:``:

1. ``GET /datasets/<dataset>/earn/<qualification>`` shows the terms and exactly what
   will be written to the researcher's ORCID record.
2. ``POST`` (accepting): with a write token already kept, we write at once; otherwise
   we ask ORCID for ``/activities/update /read-limited`` now, never at first sign-in
   (incremental consent). What was accepted waits in the session, bound to that
   sign-in's ``state``.
3. ORCID's callback (``/callback``, handed over by ``login.callback``): Deny gives a page
   that says nothing was written, and the researcher stays signed in; Authorize keeps
   the token (encrypted, apart from the session), writes, and re-reads the record.
4. ``GET .../earned`` says what happened: the item's visibility and what it means, and
   whether the dataset now opens.

A ``steward: true`` rule is granted by a steward (``gatekeeper issue``); the page then
only asks for the permission that the steward's grant will need.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qs, urlsplit

import redis
from authlib.common.errors import AuthlibBaseError
from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from requests import RequestException

from app.errors import GatekeeperError, MalformedResponse
from app.issuing import NoWriteToken, WriteUncertain
from app.orcid_writer import qualification_body
from app.web.login import (
    StoreUnavailable,
    csrf_ok,
    current_researcher,
    exchange_code,
    message_page,
    oauth_error_code,
    orcid_client,
    orcid_failure,
    redirect_to_orcid,
    revoke_at_orcid,
    still_signed_in,
    too_many_sign_ins,
)
from app.write_tokens import WRITE_SCOPE, WriteToken

logger = logging.getLogger(__name__)
bp = Blueprint("earning", __name__)

# What we ask ORCID for when the researcher chooses to earn a qualification here.
EARN_SCOPE = f"{WRITE_SCOPE} /read-limited"
PENDING_TTL = 600  # seconds an accepted-but-not-yet-written qualification waits at ORCID
MAX_PENDING = 3  # earn flows started (in other tabs, say) whose callbacks still count

VISIBILITY = {
    "public": (
        "public",
        "Anyone can see it on your ORCID record, and any service that reads your record "
        "can count it.",
    ),
    "limited": (
        "trusted parties only",
        "You, and organisations you have given permission to read your record's limited "
        "items (such as this service), can see it. Services that read only your public "
        "record will not see it.",
    ),
    "private": (
        "only me",
        "Only you and this service can see it, because we added it. No other service can "
        "count it; to let them, change its visibility on your ORCID record to "
        "Everyone or Trusted parties.",
    ),
}


def _gatekeeper():
    return current_app.extensions["gatekeeper"]


def _issuable(dataset_key: str, qualification: str):
    """(dataset, rule) when ``qualification`` is one of the dataset's and we issue it."""
    policy = _gatekeeper().checker.policy
    dataset = policy.datasets.get(dataset_key)
    rule = policy.qualifications.get(qualification)
    if (
        dataset is None
        or rule is None
        or rule.issue is None
        or not any(qualification in r.options for r in dataset.require)
    ):
        abort(404)
    return dataset, rule


def earnable(policy, dataset) -> dict[str, object]:
    """The dataset's qualifications this service issues: name -> rule."""
    return {
        key: policy.qualifications[key]
        for requirement in dataset.require
        for key in requirement.options
        if policy.qualifications[key].issue is not None
    }


def _terms_url(dataset, rule) -> str:
    return url_for("earning.earn_page", dataset_key=dataset.key, qualification=rule.key)


def _unavailable_page(dataset):
    return message_page(
        "Not available here just now",
        "This service is not set up to add qualifications to ORCID records (no key to "
        "keep ORCID's permission safely). Please contact the data steward.",
        ("Back to the dataset", url_for("pages.dataset", name=dataset.key)),
        503,
    )


@bp.get("/earn/<dataset_key>/<qualification>")
def earn_page(dataset_key, qualification):
    """The terms, and what accepting them writes to the researcher's ORCID record.

    :raise 404: when the dataset does not need it or we do not issue it.
    """
    dataset, rule = _issuable(dataset_key, qualification)
    researcher = current_researcher()
    if researcher is None:
        return redirect(url_for("login.login", next=request.path))
    gk = _gatekeeper()
    preview = qualification_body(rule, researcher.orcid, gk.checker.clock().date())
    return render_template(
        "earn.html",
        dataset=dataset,
        rule=rule,
        issue=rule.issue,
        preview=preview,
        orcid=researcher.orcid,
        enabled=gk.write_tokens.enabled,
    )


@bp.post("/earn/<dataset_key>/<qualification>")
def accept(dataset_key, qualification):
    """Accept the terms (or, for a steward's grant, allow the write): write now, or first
    ask ORCID for permission.

    :raise 400: without a valid CSRF token, or when the terms were not accepted.
    :raise 429: past SIGN_INS_PER_MINUTE trips to ORCID from this client address.
    :raise 502: with openid, ORCID's discovery document did not come, or is none.
    """
    dataset, rule = _issuable(dataset_key, qualification)
    researcher = current_researcher()
    if researcher is None:
        return redirect(
            url_for(
                "login.login",
                next=_terms_url(dataset, rule),
            )
        )
    if not csrf_ok():
        abort(400)
    gk = _gatekeeper()
    if not gk.write_tokens.enabled:
        return _unavailable_page(dataset)
    terms = rule.issue.accept_terms
    if terms is not None and (
        request.form.get("accept") != "yes" or request.form.get("version") != terms.version
    ):
        return message_page(
            "Please accept the terms first",
            "Tick the box to say you have read and accept the terms, then continue. If the "
            "page was open for a while, the terms may have changed: read them again.",
            (
                "Back to the terms",
                _terms_url(dataset, rule),
            ),
            400,
        )
    pending = {
        "dataset": dataset.key,
        "qualification": rule.key,
        "version": terms.version if terms is not None else None,
        "accepted_at": time.time(),
    }
    try:
        if gk.issuer.tokens.get(researcher.orcid) is not None:
            return _write(researcher.orcid, pending)
    except redis.RedisError:
        return _store_down_page(dataset)
    if too_many_sign_ins():
        _outcome("failed", "too_many", researcher)
        page, status = message_page(
            "Too many requests at once",
            "More trips to ORCID were started from your network in the last minute than "
            "we take. Nothing was written to your ORCID record. Please wait a minute and "
            "try again.",
            ("Back to the terms", _terms_url(dataset, rule)),
            429,
        )
        return page, status, {"Retry-After": "60"}
    try:
        response = redirect_to_orcid(scope=EARN_SCOPE)
    except StoreUnavailable:
        return _store_down_page(dataset)
    except (RequestException, MalformedResponse) as exc:  # with openid: its discovery
        reason, title, _ = orcid_failure(exc)
        _outcome("unavailable", reason, researcher)
        return message_page(
            title,
            "Nothing was written to your ORCID record. Please try again in a few minutes.",
            ("Back to the terms", _terms_url(dataset, rule)),
            502,
        )
    state = parse_qs(urlsplit(response.location).query).get("state", [""])[0]
    # One per state, the newest few: an earn started in another tab (or accepted twice)
    # still comes back as an earn, never as a sign-in with a token that can write.
    started = {k: v for k, v in _pending().items() if k != state}
    started[state] = pending
    session["earn"] = dict(list(started.items())[-MAX_PENDING:])
    return response


def _pending() -> dict:
    pending = session.get("earn")
    return pending if isinstance(pending, dict) else {}


def handles_callback(state: str) -> bool:
    """Whether ORCID's callback with ``state`` ends an earn flow (not a sign-in)."""
    return bool(state) and isinstance(_pending().get(state), dict)


def complete(state: str):
    """ORCID's answer to our request for write permission (see ``handles_callback``)."""
    started = _pending()
    pending = started.pop(state)
    session["earn"] = started
    back = url_for("pages.dataset", name=pending.get("dataset", ""))
    integration = orcid_client().framework
    researcher = current_researcher()
    if request.args.get("error"):
        integration.clear_state_data(session, state)
        error = oauth_error_code(request.args["error"], "unknown_error")
        if error != "access_denied":
            # Not the researcher's choice: ORCID could not ask (invalid_scope, server_error).
            _outcome("failed", error, researcher)
            return message_page(
                "ORCID could not ask for permission",
                "ORCID did not ask you to allow this service to add to your record (it "
                "answered with an error), so nothing was written. Please try again later, "
                "or contact the data steward.",
                ("Back to the dataset", back),
                502,
            )
        _outcome("denied", error, researcher)
        return render_template("earn_denied.html", back=back), 200
    if researcher is None:
        integration.clear_state_data(session, state)
        return message_page(
            "Please sign in again",
            "Your session ended while you were at ORCID, so nothing was written. Sign in "
            "and try again.",
            ("Sign in with ORCID", url_for("login.login", next=back)),
            401,
        )
    if time.time() - float(pending.get("accepted_at", 0)) > PENDING_TTL:
        integration.clear_state_data(session, state)
        return message_page(
            "This took too long",
            "Nothing was written to your ORCID record. Please accept the terms again.",
            ("Back to the dataset", back),
            400,
        )
    try:
        token = exchange_code()
        if not isinstance(token.get("access_token"), str | None):
            raise TypeError("access_token is not a string")
    except AuthlibBaseError as exc:
        error = oauth_error_code(getattr(exc, "error", None), type(exc).__name__)
        _outcome("failed", error, researcher)
        return message_page(
            "This link has expired or was already used",
            "Nothing was written to your ORCID record. Please try again.",
            ("Back to the dataset", back),
            400,
        )
    except RequestException:  # DeadlinePassed among them
        _outcome("unavailable", "orcid_unreachable", researcher)
        return message_page(
            "ORCID is not answering",
            "Nothing was written to your ORCID record. Please try again in a few minutes.",
            ("Back to the dataset", back),
            502,
        )
    except StoreUnavailable:
        return _store_down_page(None, back)
    except (ValueError, TypeError, AttributeError, MalformedResponse):
        # A 200 from ORCID's token endpoint that is no token (an HTML page, a JSON list,
        # an expires_in that is not a number: Authlib raises these; an access_token that
        # is not a string), or with openid, keys that are no key set (exchange_code).
        _outcome("unavailable", "orcid_bad_answer", researcher)
        return message_page(
            "ORCID gave an answer we could not read",
            "Nothing was written to your ORCID record. Please try again in a few minutes.",
            ("Back to the dataset", back),
            502,
        )
    if str(token.get("orcid") or "") != researcher.orcid:
        # Signed in at ORCID as someone else: that record is not the one we decide on.
        # The token we will not keep must not stay valid at ORCID for twenty years.
        revoke_at_orcid([token["access_token"]] if token.get("access_token") else [])
        _outcome("failed", "other_orcid", researcher)
        return message_page(
            "That was a different ORCID record",
            f"You are signed in here as {researcher.orcid}, but gave permission at ORCID "
            "for another record. Nothing was written. Sign in to ORCID with the record you "
            "use here, and try again.",
            ("Back to the dataset", back),
            400,
        )
    scope = tuple(str(token.get("scope") or "").split())
    if WRITE_SCOPE not in scope or not token.get("access_token"):
        revoke_at_orcid([token["access_token"]] if token.get("access_token") else [])
        _outcome("failed", "no_write_scope", researcher)
        return message_page(
            "ORCID did not give us permission to add to your record",
            "Nothing was written. To earn this qualification here, allow this service to "
            "add to your record when ORCID asks.",
            ("Back to the dataset", back),
            400,
        )
    now = time.time()
    kept = WriteToken(
        token["access_token"], scope, now + float(token.get("expires_in") or 3600), now
    )
    gk = _gatekeeper()
    try:
        gk.write_tokens.put(researcher.orcid, kept)
    except redis.RedisError:
        return _store_down_page(None, back)
    # Kept only if the session still stands: no write permission outlives a Disconnect
    # in another tab ("delete what you hold about me").
    still = still_signed_in(researcher)
    if not still:
        try:
            gk.write_tokens.delete(researcher.orcid)
        except redis.RedisError:
            logger.warning("could not delete a write token kept after a sign-out")
        revoke_at_orcid([kept.access_token])
        if still is None:
            return _store_down_page(None, back)  # cannot say: not kept, nothing written
        _outcome("failed", "signed_out", researcher)
        return message_page(
            "You were signed out",
            "You were signed out (or disconnected) while ORCID asked for permission, so "
            "we did not keep it, and nothing was written.",
            ("Sign in with ORCID", url_for("login.login", next=back)),
            401,
        )
    _outcome("ok", None, researcher)
    return _write(researcher.orcid, pending)


def _write(orcid: str, pending: dict):
    """Write what was accepted (or, for a steward's grant, say the permission is kept)."""
    gk = _gatekeeper()
    policy = gk.checker.policy
    dataset = policy.datasets.get(pending["dataset"])
    rule = policy.qualifications.get(pending["qualification"])
    back = url_for("pages.dataset", name=pending["dataset"])
    if dataset is None or rule is None or rule.issue is None:
        return message_page(
            "The policy changed",
            "This qualification is no longer issued here. Nothing was written.",
            ("All datasets", url_for("pages.index")),
            409,
        )
    terms = rule.issue.accept_terms
    if terms is None:
        return message_page(
            "Permission kept",
            "A data steward grants this qualification. When they do, we add it to your "
            "ORCID record with the permission you just gave, and the dataset opens.",
            ("Back to the dataset", back),
        )
    if pending.get("version") != terms.version:
        return message_page(
            "The terms have changed",
            "The terms changed while you were accepting them. Nothing was written: please "
            "read the new version and accept it.",
            (
                "Read the terms",
                _terms_url(dataset, rule),
            ),
            409,
        )
    try:
        result = gk.issuer.issue(orcid, rule, by="researcher")
    except NoWriteToken:
        return message_page(
            "ORCID no longer accepts our permission",
            "ORCID refused the permission you gave us (it may have been revoked). Nothing "
            "was written; please accept the terms again to give it anew.",
            (
                "Back to the terms",
                _terms_url(dataset, rule),
            ),
            409,
        )
    except WriteUncertain as exc:
        logger.warning("a qualification may have been written", extra={"orcid": orcid})
        return message_page(
            "We could not tell whether it was added",
            exc.message,
            ("Back to the dataset", back),
            502,
        )
    except (GatekeeperError, redis.RedisError) as exc:
        reason = getattr(exc, "reason", "store_unavailable")
        logger.warning("could not write a qualification", extra={"orcid": orcid, "reason": reason})
        message = getattr(exc, "message", None) or "Redis did not answer."
        return message_page(
            "We could not add it to your ORCID record",
            f"{message} Nothing was changed on this service's side; please try again later.",
            ("Back to the dataset", back),
            502,
        )
    session["earned"] = {
        "dataset": dataset.key,
        "qualification": rule.key,
        "kind": result.kind,
        "put_code": result.put_code,
        "visibility": result.visibility,
        "valid_until": result.valid_until.isoformat(),
    }
    return redirect(url_for("earning.earned", dataset_key=dataset.key, qualification=rule.key))


@bp.get("/earn/<dataset_key>/<qualification>/earned")
def earned(dataset_key, qualification):
    """What was written, what its visibility means, and whether the dataset opens now."""
    dataset, rule = _issuable(dataset_key, qualification)
    researcher = current_researcher()
    if researcher is None:
        return redirect(url_for("login.login", next=url_for("pages.dataset", name=dataset.key)))
    done = session.get("earned")
    if not isinstance(done, dict) or done.get("qualification") != rule.key:
        return redirect(url_for("pages.dataset", name=dataset.key))
    gk = _gatekeeper()
    decision = gk.checker.check(researcher.orcid, dataset.key, token=researcher.token)
    visibility = VISIBILITY.get(done.get("visibility") or "")
    return render_template(
        "earned.html",
        dataset=dataset,
        rule=rule,
        done=done,
        visibility=visibility,
        decision=decision,
        record_url=f"{gk.settings.orcid_base_url.rstrip('/')}/{researcher.orcid}",
    )


def _store_down_page(dataset, back: str | None = None):
    return message_page(
        "We cannot do this just now",
        "This service could not keep ORCID's permission safely (its store did not answer). "
        "Nothing was written to your ORCID record; please try again in a few minutes.",
        ("Back to the dataset", back or url_for("pages.dataset", name=dataset.key)),
        503,
    )


def _outcome(outcome: str, reason: str | None, researcher) -> None:
    """One log line per write permission asked of ORCID: never a code, state or token."""
    entry = {"event": "write_consent", "outcome": outcome}
    if reason:
        entry["reason"] = reason
    if researcher is not None:
        entry["orcid"] = researcher.orcid
    logger.info("write permission %s", outcome, extra=entry)
