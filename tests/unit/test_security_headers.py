"""Security headers on every page, and pages a strict Content-Security-Policy can render."""

from __future__ import annotations

import json
import secrets
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from flask import template_rendered

from app import create_app
from app.cache import session_record
from app.saved_record import SavedRecord
from app.settings import Settings
from tests import orcid_json
from tests.conftest import POLICY, RESEARCHER, UKDS, qualified_items

TEMPLATES = Path(__file__).parents[2] / "app" / "web" / "templates"
DEPRECATED = Path(__file__).parents[1] / "data" / "orcid" / "error-301-deprecated.json"
CLIENT = {"ORCID_CLIENT_ID": "APP-ABCDEFGHIJKLMNOP", "ORCID_CLIENT_SECRET": "secret"}

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self' https://orcid.org; frame-ancestors 'none'; base-uri 'none'"
)
# A qualification this service issues, and a dataset that needs it: the earn pages.
ISSUED = """
version: 1
qualifications:
  dua:
    title: Accepted the agreement
    sources: [self-issued]
    issue:
      organization: {name: SAIL Databank, city: Swansea, country: GB, ror: 053fq8t95}
      external_id: {type: other-id, value: "dua-{version}-{orcid}"}
      valid_for_days: 365
      accept_terms: {url: https://example.org/dua, version: "1"}
datasets:
  agreed:
    paths: [/datasets/agreed/]
    require: [dua]
"""
# A title written to break out of an attribute or into a script, as a researcher may type it.
HOSTILE_TITLE = 'Good Clinical Practice" onmouseover="alert(1)"><script>alert(2)</script>'


def record(items=(), **extra) -> SavedRecord:
    return SavedRecord(
        {
            "orcid": RESEARCHER,
            "qualifications": orcid_json.summaries(RESEARCHER, list(items)),
            "items": {str(i["put-code"]): i for i in items},
            **extra,
        }
    )


RECORDS = {
    "allowed": lambda: record(qualified_items()),
    "refused": lambda: record(
        [
            orcid_json.qualification(
                1, owner=RESEARCHER, src=orcid_json.source(orcid=RESEARCHER, name="UKDS")
            ),
            orcid_json.qualification(
                2, owner=RESEARCHER, title=HOSTILE_TITLE, src=orcid_json.source(client_id=UKDS)
            ),
        ]
    ),
    "unreadable": lambda: record(error=json.loads(DEPRECATED.read_text())),
    "locked": lambda: record(error={"response-code": 409, "error-code": 9018}),
    "broken": lambda: BrokenReader(),
}


class BrokenReader:
    """An ORCID reader with a bug: the page must still be ours, headers and all."""

    def read_qualifications(self, orcid, wanted=None, token=None):
        raise RuntimeError("a bug in the reader")


@pytest.fixture
def make_app(write_policy):
    def make(reader="allowed", **environ):
        policy = write_policy(POLICY)
        write_policy(ISSUED, "issued.yaml")
        settings = Settings.from_env(
            {
                "SECRET_KEY": "unit-test-secret-key-0123",
                "POLICY_PATH": str(policy.parent),
                "WRITE_TOKEN_KEY": Fernet.generate_key().decode(),
                "ORCID_API_URL": "https://api.orcid.org/v3.0",
                **CLIENT,
                **environ,
            }
        )
        return create_app(settings, orcid_reader=RECORDS[reader]())

    return make


def form_action(response) -> list[str]:
    for directive in response.headers["Content-Security-Policy"].split("; "):
        name, *sources = directive.split()
        if name == "form-action":
            return sources
    return []


class SignedIn:
    """A client whose cookie names a session the store holds, as a real sign-in leaves it."""

    def __init__(self, app, orcid: str = RESEARCHER):
        self.client = app.test_client()
        sid = secrets.token_urlsafe(16)
        app.extensions["gatekeeper"].store.put_session(sid, session_record(orcid, None), 3600)
        with self.client.session_transaction() as session:
            session["researcher"] = {"orcid": orcid, "name": "Josiah", "sid": sid, "amr": []}
            session["csrf"] = self.csrf = "csrf-token-for-tests"


def _get(path, *then):
    """GET ``path`` (and then each of ``then``, answering with the last)."""

    def go(client, csrf):
        response = client.get(path)
        for other in then:
            response = client.get(other)
        return response

    return go


def _post(path, **form):
    return lambda client, csrf: client.post(path, data={"csrf": csrf, **form})


def _twice(path):
    def go(client, csrf):
        client.post(path, data={"csrf": csrf})
        return client.post(path, data={"csrf": csrf})

    return go


def _denied_at_orcid(client, csrf):
    """Accept the terms, then come back from ORCID with Deny."""
    response = client.post(EARN, data={"csrf": csrf, "accept": "yes", "version": "1"})
    state = response.headers["Location"].split("state=")[1].split("&")[0]
    return client.get(f"/callback?error=access_denied&state={state}")


def _orcid_error(client, csrf):
    """Accept the terms, then come back from ORCID with an error that is no Deny."""
    response = client.post(EARN, data={"csrf": csrf, "accept": "yes", "version": "1"})
    state = response.headers["Location"].split("state=")[1].split("&")[0]
    return client.get(f"/callback?error=server_error&state={state}")


def _earned(client, csrf):
    """The page after a write, as the earn flow leaves the session."""
    with client.session_transaction() as session:
        session["earned"] = {
            "dataset": "agreed",
            "qualification": "dua",
            "kind": "issued",
            "put_code": 7,
            "visibility": "private",
            "valid_until": "2027-12-01",
        }
    return client.get(EARN + "/earned")


EARN = "/earn/agreed/dua"


def _as_steward(go):
    """``go`` with the signed-in researcher listed in STEWARD_ORCIDS."""

    def run(client, csrf):
        gk = client.application.extensions["gatekeeper"]
        gk.settings = replace(gk.settings, steward_orcids=(RESEARCHER,))
        return go(client, csrf)

    return run


def _passport_page(client, csrf):
    """The decoded passport a browser sees (the app gets a signing key first)."""
    from app.passports import SigningKey, VisaSigner

    client.application.extensions["gatekeeper"].visa_signer = VisaSigner(SigningKey.generate())
    return client.get("/ga4gh/passport", headers={"Accept": "text/html"})


# (id, reader, signed in, request, expected status)
PAGES = [
    ("index", "allowed", False, _get("/"), 200),
    ("index-signed-in", "allowed", True, _get("/"), 200),
    ("dataset", "allowed", False, _get("/datasets/sail"), 200),
    ("dataset-allowed", "allowed", True, _get("/datasets/sail"), 200),
    ("dataset-refused", "refused", True, _get("/datasets/sail"), 200),
    ("dataset-unreadable", "unreadable", True, _get("/datasets/sail"), 200),
    ("dataset-locked", "locked", True, _get("/datasets/sail"), 200),
    ("dataset-unexpected-error", "broken", True, _get("/datasets/sail"), 500),
    ("dataset-unknown", "allowed", True, _get("/datasets/nope"), 404),
    ("page-unknown", "allowed", False, _get("/nope"), 404),
    ("static-unknown", "allowed", True, _get("/static/nope.css"), 404),
    ("login", "allowed", False, _get("/login?next=/datasets/sail"), 302),
    ("callback-denied", "allowed", False, _get("/callback?error=access_denied&state=s"), 200),
    ("callback-bad-state", "allowed", False, _get("/callback?code=abc&state=s"), 400),
    ("logout-page", "allowed", True, _get("/logout"), 200),
    ("logout", "allowed", True, _post("/logout"), 200),
    ("logout-expired-form", "allowed", True, _post("/logout", csrf="wrong"), 400),
    ("check-again", "allowed", True, _post("/check/sail"), 302),
    ("check-again-too-often", "allowed", True, _twice("/check/sail"), 429),
    ("check-again-signed-out", "allowed", False, _post("/check/sail"), 302),
    ("disconnect-page", "allowed", True, _get("/disconnect"), 200),
    ("disconnect-page-signed-out", "allowed", False, _get("/disconnect"), 200),
    ("logo-unset", "allowed", False, _get("/logo"), 404),
    ("earn", "allowed", True, _get(EARN), 200),
    ("earn-signed-out", "allowed", False, _get(EARN), 302),
    ("earn-not-accepted", "allowed", True, _post(EARN), 400),
    ("earn-consent", "allowed", True, _post(EARN, accept="yes", version="1"), 302),
    ("earn-denied", "allowed", True, _denied_at_orcid, 200),
    ("earn-orcid-error", "allowed", True, _orcid_error, 502),
    ("earned", "allowed", True, _earned, 200),
    ("earn-unknown", "allowed", True, _get("/earn/sail/gcp"), 404),
    (
        "steward-issued",
        "allowed",
        True,
        _as_steward(_get("/datasets/sail", "/steward/agreed")),
        200,
    ),
    (
        "steward-issue-terms",
        "allowed",
        True,
        _as_steward(
            _post("/steward/issue", orcid=RESEARCHER, dataset="agreed", qualification="dua")
        ),
        400,
    ),
    (
        "steward-withdraw-no-permission",
        "allowed",
        True,
        _as_steward(
            _post("/steward/withdraw", orcid=RESEARCHER, dataset="agreed", qualification="dua")
        ),
        409,
    ),
    ("healthz", "allowed", False, _get("/healthz"), 200),
    ("readyz", "allowed", False, _get("/readyz"), 200),
    ("steward-signed-out", "allowed", False, _get("/steward/"), 403),
    ("steward-not-a-steward", "allowed", True, _get("/steward/"), 403),
    ("steward", "allowed", True, _as_steward(_get("/steward/")), 200),
    ("steward-dataset", "refused", True, _as_steward(_get("/datasets/sail", "/steward/sail")), 200),
    ("steward-csv", "allowed", True, _as_steward(_get("/datasets/sail", "/steward/sail.csv")), 200),
    (
        "steward-revoke",
        "allowed",
        True,
        _as_steward(_post("/steward/revoke", orcid=RESEARCHER)),
        303,
    ),
    ("steward-log-unknown", "allowed", True, _as_steward(_get("/steward/nope")), 404),
    ("tokens", "allowed", True, _get("/tokens"), 200),
    ("tokens-signed-out", "allowed", False, _get("/tokens"), 302),
    ("token-created", "allowed", True, _post("/tokens", name="laptop", days="90"), 201),
    ("token-refused", "allowed", True, _post("/tokens", name="", days="90"), 400),
    ("token-revoke", "allowed", True, _post("/tokens/0123456789ab/revoke"), 302),
    ("passport", "allowed", True, _passport_page, 200),
]


def fetch(make_app, reader, signed_in, go, **environ):
    app = make_app(reader, **environ)
    if signed_in:
        who = SignedIn(app)
        return go(who.client, who.csrf)
    return go(app.test_client(), "")


@pytest.mark.parametrize(
    ("reader", "signed_in", "go", "status"), [p[1:] for p in PAGES], ids=[p[0] for p in PAGES]
)
class TestEveryPage:
    def test_carries_the_security_headers(self, make_app, reader, signed_in, go, status):
        response = fetch(make_app, reader, signed_in, go)
        assert response.status_code == status
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"

    def test_is_never_kept_by_a_cache(self, make_app, reader, signed_in, go, status):
        response = fetch(make_app, reader, signed_in, go)
        assert response.headers["Cache-Control"] == "private, no-store"

    def test_has_no_inline_script_style_or_handler(self, make_app, reader, signed_in, go, status):
        response = fetch(make_app, reader, signed_in, go)
        if response.mimetype == "text/html":
            assert inline_content(response.get_data(as_text=True)) == []


class TestStaticFiles:
    def test_style_sheet_carries_the_headers_but_may_be_cached(self, make_app):
        with make_app().test_client().get("/static/style.css") as response:
            assert response.status_code == 200
            assert response.headers["Content-Security-Policy"] == CSP
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "no-store" not in response.headers.get("Cache-Control", "")


class TestContentSecurityPolicy:
    def test_forms_may_lead_to_the_configured_orcid_origin_only(self, make_app):
        response = make_app(ORCID_BASE_URL="http://127.0.0.1:8001/").test_client().get("/")
        directives = response.headers["Content-Security-Policy"].split("; ")
        assert "form-action 'self' http://127.0.0.1:8001" in directives

    def test_check_again_when_signed_out_redirects_within_form_action(self, make_app):
        # A browser applies form-action to each redirect after a POST: every hop must be
        # this site or an origin the policy names, or "Check again" stops at a CSP error.
        client = make_app(ORCID_BASE_URL="https://sandbox.orcid.org").test_client()
        response = client.post("/check/sail")
        allowed = form_action(response)
        hops = []
        while response.status_code in (301, 302, 303, 307, 308):
            hops.append(response.headers["Location"])
            if not hops[-1].startswith("/"):
                break
            response = client.get(hops[-1])
        assert hops[0].startswith("/login?")
        assert hops[-1].startswith("https://sandbox.orcid.org/oauth/authorize?")
        assert allowed == ["'self'", "https://sandbox.orcid.org"]

    def test_a_hostile_title_is_text_not_markup(self, make_app):
        page = fetch(make_app, "refused", True, _get("/datasets/sail")).get_data(as_text=True)
        assert "<script>alert(2)" not in page
        assert inline_content(page) == []


class TestTemplates:
    def test_the_page_table_renders_every_template(self, make_app):
        rendered = set()

        def record_template(sender, template, context, **extra):
            rendered.add(template.name)

        template_rendered.connect(record_template)
        try:
            for _, reader, signed_in, go, _status in PAGES:
                fetch(make_app, reader, signed_in, go)
        finally:
            template_rendered.disconnect(record_template)
        # base.html and macros.html are rendered through the pages that use them.
        assert rendered | {"base.html", "macros.html"} == {
            path.name for path in TEMPLATES.glob("*.html")
        }

    @pytest.mark.parametrize("path", sorted(TEMPLATES.glob("*.html")), ids=lambda p: p.name)
    def test_source_has_no_inline_script_style_or_handler(self, path):
        assert inline_content(path.read_text()) == []


def inline_content(html: str) -> list[str]:
    """Everything in ``html`` that a policy without 'unsafe-inline' would block."""
    finder = _InlineFinder()
    finder.feed(html)
    finder.close()
    return finder.found


class _InlineFinder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        if tag == "script" and not names.get("src"):
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=...>")
            if name == "style":
                self.found.append(f"<{tag} style=...>")
            if name in ("href", "src", "action", "formaction") and (
                value or ""
            ).strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}=javascript:...>")

    handle_startendtag = handle_starttag
