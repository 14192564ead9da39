"""The researcher's pages: every dataset with their status, and one decision in words."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, redirect, render_template, url_for

from app.explain import describe_requirement, met_sentence, next_step
from app.web.login import csrf_ok, current_researcher

bp = Blueprint("pages", __name__)


def _gatekeeper():
    return current_app.extensions["gatekeeper"]


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

    :raise 404: when the policy has no such dataset.
    """
    gk = _gatekeeper()
    policy = gk.checker.policy
    target = policy.datasets.get(name)
    if target is None:
        abort(404)
    researcher = current_researcher()
    if researcher is None:
        return render_template("dataset.html", dataset=target, decision=None, signed_in=None)
    decision = gk.checker.check(researcher.orcid, name, token=researcher.token)
    return render_template(
        "dataset.html",
        dataset=target,
        decision=decision,
        signed_in=researcher,
        policy=policy,
        describe=lambda result: describe_requirement(policy, result),
        met_sentence=met_sentence,
        next_step=lambda result: next_step(policy, result),
    )


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
