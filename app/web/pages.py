"""The researcher's pages: every dataset with their status, and one decision in words."""

from __future__ import annotations

import os

from flask import Blueprint, abort, current_app, redirect, render_template, send_file, url_for

from app.explain import (
    ORCID_SUPPORT,
    dataset_needs,
    describe_requirement,
    met_sentence,
    next_step,
    read_error_advice,
)
from app.settings import LOGO_TYPES
from app.web.earning import earnable
from app.web.login import csrf_ok, current_researcher

# Days before its end that a qualification this service issued can be renewed here.
RENEW_WITHIN_DAYS = 30

bp = Blueprint("pages", __name__)


@bp.before_app_request
def _current_policy():
    # Pages judge with the policy in force, as /auth does: a worker that serves only
    # pages must see an edit within a second too (the look is rate-limited and cheap).
    _gatekeeper().policy_file.refresh()


def _gatekeeper():
    return current_app.extensions["gatekeeper"]


@bp.app_context_processor
def _page_helpers():
    """What the layout shows on every page: the site, the steward, iDs as ORCID asks."""
    settings = _gatekeeper().settings
    base = settings.orcid_base_url.rstrip("/")
    logo = settings.logo_path
    if settings.logo_file is not None:
        logo = url_for("pages.logo")
    return {
        "site_name": settings.site_name,
        "site_logo": logo,
        "steward_contact": settings.steward_contact
        and settings.steward_contact.removeprefix("mailto:"),
        "steward_href": settings.steward_href,
        "orcid_support": ORCID_SUPPORT,
        # ORCID's iD display guidelines: the full URI (the sandbox's host there), linked.
        "orcid_uri": lambda orcid: f"{base}/{orcid}",
        "orcid_host": f"{base}/",
    }


@bp.get("/")
def index():
    """Every dataset, with the signed-in researcher's status where already known."""
    gk = _gatekeeper()
    policy = gk.checker.policy
    researcher = current_researcher()
    rows = []
    for dataset in policy.datasets.values():
        decision = gk.checker.cached(researcher.orcid, dataset.key) if researcher else None
        rows.append((dataset, decision))
    return render_template("index.html", rows=rows, signed_in=researcher)


@bp.get("/datasets/<name>")
def dataset(name):
    """The decision for one dataset, with reasons and what to do next.

    Signed out, the page lists what the dataset needs, so a researcher knows before
    consenting at ORCID.

    :raise 404: when the policy has no such dataset.
    """
    gk = _gatekeeper()
    policy = gk.checker.policy
    target = policy.datasets.get(name)
    if target is None:
        abort(404)
    needs = dataset_needs(policy, target)
    researcher = current_researcher()
    if researcher is None:
        return render_template(
            "dataset.html", dataset=target, decision=None, signed_in=None, needs=needs
        )
    decision = gk.checker.check(researcher.orcid, name, token=researcher.token)
    advice = None
    if decision.error is not None:
        advice = read_error_advice(decision.error, gk.settings.orcid_base_url)
    return render_template(
        "dataset.html",
        dataset=target,
        decision=decision,
        signed_in=researcher,
        needs=needs,
        advice=advice,
        # We read what the record shows to the public (or, with /read-limited, to us):
        # say so when nothing was found, never ask to change visibility settings.
        public_only="/read-limited" not in gk.settings.orcid_scope.split(),
        describe=lambda result: describe_requirement(policy, result),
        met_sentence=lambda result: met_sentence(result, put_code=False),
        next_step=lambda result: next_step(policy, result),
        earnable=earnable(policy, target) if gk.write_tokens.enabled else {},
        today=gk.checker.clock().date(),
        renew_within=RENEW_WITHIN_DAYS,
    )


@bp.get("/logo")
def logo():
    """The site's logo from LOGO_PATH, served here because the CSP allows img-src 'self'.

    :raise 404: when LOGO_PATH names no file (unset, or a URL).
    """
    path = _gatekeeper().settings.logo_file
    if path is None:
        abort(404)
    kind = LOGO_TYPES[os.path.splitext(path)[1].lower()]
    return send_file(os.path.abspath(path), mimetype=kind, max_age=3600)


@bp.post("/check/<name>")
def check_again(name):
    """Decide again from ORCID, bypassing the cache (a few times a minute at most).

    :raise 400: without a valid CSRF token. :raise 429: when asked too often.
    """
    gk = _gatekeeper()
    if gk.checker.policy.datasets.get(name) is None:
        abort(404)
    researcher = current_researcher()
    if researcher is None:
        return redirect(url_for("login.login", next=url_for("pages.dataset", name=name)))
    if not csrf_ok():
        abort(400)
    window = gk.settings.recheck_interval
    if gk.store.hit(f"recheck:{researcher.orcid}", window) > 1:
        return render_template(
            "message.html",
            title="Please wait a moment",
            message=f"You can check again once every {window} seconds.",
            action=("Back", url_for("pages.dataset", name=name)),
        ), 429
    gk.checker.check(researcher.orcid, name, token=researcher.token, fresh=True)
    return redirect(url_for("pages.dataset", name=name))
