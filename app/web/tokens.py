"""The Tokens page: a signed-in researcher's personal access tokens for scripts.

A token is shown once, when it is made, with examples for curl, wget and rclone; the
store keeps only its digest (app/access_tokens.py). ``/auth`` answers a token's request
with the researcher's own decision (app/web/forward_auth.py).
"""

from __future__ import annotations

import logging
from urllib.parse import urljoin

from flask import (
    Blueprint,
    current_app,
    flash,
    get_flashed_messages,
    redirect,
    render_template,
    request,
    url_for,
)

from app.access_tokens import DEFAULT_DAYS, MAX_DAYS, MAX_NAME, TokenRefused
from app.web.login import csrf_ok, current_researcher, message_page, still_signed_in

logger = logging.getLogger(__name__)
bp = Blueprint("tokens", __name__)

LIFETIMES = (7, 30, DEFAULT_DAYS, 180, MAX_DAYS)  # days, offered on the form


def _gatekeeper():
    return current_app.extensions["gatekeeper"]


def _unavailable():
    return message_page(
        "Tokens are unavailable just now",
        "We could not reach the store that keeps tokens. Please try again in a minute.",
        ("Tokens", url_for("tokens.index")),
        503,
    )


def _page(researcher, *, error=None, form=None, status=200):
    gk = _gatekeeper()
    listed = gk.access_tokens.list(researcher.orcid)
    if listed is None:
        return _unavailable()
    datasets = gk.checker.policy.datasets
    return render_template(
        "tokens.html",
        tokens=listed,
        datasets=datasets,
        lifetimes=LIFETIMES,
        default_days=DEFAULT_DAYS,
        max_name=MAX_NAME,
        error=error,
        form=form or {},
        notices=get_flashed_messages(),
    ), status


def _form_sender():
    """(the signed-in researcher, None), or (None, the answer) to a form sent signed out
    (sign in and come back) or without its CSRF token (400)."""
    researcher = current_researcher()
    if researcher is None:
        return None, redirect(url_for("login.login", next=url_for("tokens.index")))
    if not csrf_ok():
        return None, message_page(
            "Please try again", "That form had expired.", ("Tokens", url_for("tokens.index")), 400
        )
    return researcher, None


@bp.get("/tokens")
def index():
    """The researcher's tokens and the form to make one."""
    researcher = current_researcher()
    if researcher is None:
        return redirect(url_for("login.login", next=url_for("tokens.index")))
    return _page(researcher)


@bp.post("/tokens")
def create():
    """Make a token and show it, once.

    :raise 400: without a valid CSRF token, or for a form that names no valid token.
    :raise 401: the session ended while the token was made (it is not kept).
    :raise 503: Redis did not answer.
    """
    researcher, refusal = _form_sender()
    if refusal is not None:
        return refusal
    gk = _gatekeeper()
    policy = gk.checker.policy
    form = {
        "name": request.form.get("name", "")[: MAX_NAME * 4],
        "scope": request.form.get("scope", "all"),
        "datasets": request.form.getlist("dataset"),
        "days": request.form.get("days", str(DEFAULT_DAYS)),
    }
    datasets = None
    if form["scope"] == "chosen":
        unknown = [name for name in form["datasets"] if name not in policy.datasets]
        if unknown:
            return _page(researcher, error="Choose datasets from the list.", form=form, status=400)
        datasets = tuple(dict.fromkeys(form["datasets"]))
    try:
        days = int(form["days"])
    except ValueError:
        days = 0
    try:
        made = gk.access_tokens.create(researcher.orcid, form["name"], datasets, days)
    except TokenRefused as exc:
        return _page(researcher, error=exc.message, form=form, status=400)
    if made is None:
        return _unavailable()
    token, info = made
    # Shown only if the session still stands: a token "sign out everywhere" no longer
    # lists is never known to anyone (a stolen cookie's create cannot outlast it).
    still = still_signed_in(researcher)
    if not still:
        gk.access_tokens.revoke(researcher.orcid, token=info.id)
        if still is None:
            return _unavailable()
        return message_page(
            "You were signed out",
            "You were signed out while the token was being made, so it was not kept. "
            "Sign in and make it again.",
            ("Sign in with ORCID", url_for("login.login", next=url_for("tokens.index"))),
            401,
        )
    logger.info(
        "token created",
        extra={
            "event": "token_created",
            "orcid": researcher.orcid,
            "token_id": info.id,
            "datasets": list(datasets) if datasets is not None else "all",
            "days": days,
        },
    )
    return render_template(
        "token_created.html", token=token, info=info, examples=_examples(token, datasets)
    ), 201


@bp.post("/tokens/<token_id>/revoke")
def revoke(token_id):
    """Revoke one of the researcher's tokens: every worker refuses it within a second.

    :raise 400: without a valid CSRF token.
    """
    researcher, refusal = _form_sender()
    if refusal is not None:
        return refusal
    revoked = _gatekeeper().access_tokens.revoke(researcher.orcid, token=token_id[:64])
    if revoked is None:
        return _unavailable()
    if revoked:
        logger.info(
            "token revoked",
            extra={"event": "token_revoked", "orcid": researcher.orcid, "token_id": token_id},
        )
        flash("The token is revoked: scripts using it are refused from now on.")
    else:
        flash("That token was already gone.")
    return redirect(url_for("tokens.index"))


def _examples(token: str, datasets: tuple[str, ...] | None) -> dict[str, str]:
    """Copy-paste commands for the first dataset the token opens."""
    gk = _gatekeeper()
    policy = gk.checker.policy
    names = datasets or tuple(policy.datasets)
    dataset = policy.datasets.get(names[0]) if names else None
    base = (gk.settings.public_url or request.host_url).rstrip("/") + "/"
    folder = urljoin(base, dataset.paths[0].lstrip("/")) if dataset and dataset.paths else base
    folder = folder if folder.endswith("/") else folder + "/"
    file = folder + "FILE"
    return {
        "curl": f'curl -fO -H "Authorization: Bearer {token}" {file}',
        "curl_basic": f"curl -fO -u token:{token} {file}",
        "wget": f'wget --header="Authorization: Bearer {token}" {file}',
        "rclone": (
            f'rclone copy --http-url {folder} --http-headers "Authorization,Bearer {token}" '
            ":http: ./data"
        ),
    }
