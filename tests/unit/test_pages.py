"""What a researcher reads on our pages: requirements, advice they can follow, iDs as ORCID
asks, and the site's own name, steward and logo."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest

from app import create_app
from app.cache import session_record
from app.errors import ConfigError
from app.saved_record import SavedRecord
from app.settings import Settings
from tests import orcid_json
from tests.conftest import POLICY, RESEARCHER, UKDS, qualified_items

DEPRECATED = Path(__file__).parents[1] / "data" / "orcid" / "error-301-deprecated.json"
STATIC = Path(__file__).parents[2] / "app" / "web" / "static"
CLIENT = {"ORCID_CLIENT_ID": "APP-ABCDEFGHIJKLMNOP", "ORCID_CLIENT_SECRET": "secret"}
PRIMARY = "0000-0001-5109-3700"
# Words that would ask a researcher to change their ORCID visibility settings, which
# ORCID's integration requirements forbid.
VISIBILITY_ASKS = re.compile(r"visibility|make (it|them|your \w+) public|set .* to public", re.I)


def record(items=(), **extra) -> SavedRecord:
    return SavedRecord(
        {
            "orcid": RESEARCHER,
            "qualifications": orcid_json.summaries(RESEARCHER, list(items)),
            "items": {str(i["put-code"]): i for i in items},
            **extra,
        }
    )


def orcid_error(status: int, code: int | None = None) -> dict:
    body = {"response-code": status, "developer-message": f"{status} from ORCID"}
    return body | ({"error-code": code} if code else {})


def self_asserted_srt():
    return orcid_json.qualification(
        1, owner=RESEARCHER, src=orcid_json.source(orcid=RESEARCHER, name="UKDS")
    )


READERS = {
    "allowed": lambda: record(qualified_items()),
    "refused": lambda: record([self_asserted_srt()]),
    "nothing": lambda: record([]),
    "unreadable-item": lambda: record(
        [
            {
                **qualified_items()[0],
                "start-date": {"year": {"value": "2025"}, "day": {"value": "01"}},
            }
        ]
    ),
    "locked": lambda: record(error=orcid_error(409, 9018)),
    "deactivated": lambda: record(error=orcid_error(409, 9044)),
    "unclaimed": lambda: record(error=orcid_error(409, 9036)),
    "forbidden": lambda: record(error=orcid_error(403)),
    "malformed": lambda: record(error=orcid_error(400)),
    "deprecated": lambda: record(error=json.loads(DEPRECATED.read_text())),
}


@pytest.fixture
def make_app(write_policy):
    def make(reader="allowed", **environ):
        settings = Settings.from_env(
            {
                "SECRET_KEY": "unit-test-secret-key-0123",
                "POLICY_PATH": str(write_policy(POLICY)),
                **CLIENT,
                **environ,
            }
        )
        return create_app(settings, orcid_reader=READERS[reader]())

    return make


def signed_in(app, orcid: str = RESEARCHER):
    """A client whose cookie names a session the store holds, as a real sign-in leaves it."""
    client = app.test_client()
    sid = secrets.token_urlsafe(16)
    app.extensions["gatekeeper"].store.put_session(sid, session_record(orcid, None), 3600)
    with client.session_transaction() as session:
        session["researcher"] = {"orcid": orcid, "name": "Josiah", "sid": sid, "amr": []}
        session["csrf"] = "csrf-token-for-tests"
    return client


def page(make_app, reader="allowed", path="/datasets/sail", signed=True, **environ) -> str:
    app = make_app(reader, **environ)
    client = signed_in(app) if signed else app.test_client()
    response = client.get(path)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def main(html: str) -> str:
    return html.split("<main", 1)[1].split("</main>", 1)[0]


def text(html: str) -> str:
    """What a reader sees: tags dropped, entities read, spaces collapsed."""
    from html import unescape

    html = re.sub(r'<img [^>]*alt="([^"]*)"[^>]*>', r" \1 ", html)
    return " ".join(unescape(re.sub(r"<[^>]+>", "", html)).split())


class TestRequirementsBeforeSignIn:
    def test_a_signed_out_dataset_page_lists_each_requirement_and_who_may_add_it(self, make_app):
        seen = text(main(page(make_app, signed=False)))
        assert (
            '"Safe Researcher Training", added to your ORCID record by UK Data Service or '
            "this service." in seen
        )
        assert 'One of: "gcp", added to your ORCID record by NIHR Learn' in seen
        assert '"hsr", added to your ORCID record by you or anyone else' in seen

    def test_an_age_limit_is_stated(self, make_app):
        seen = text(main(page(make_app, path="/datasets/open", signed=False)))
        assert (
            '"Data Protection Essentials", added to your ORCID record by you or anyone else' in seen
        )
        assert "started in the last 365 days" in seen

    def test_the_sign_in_button_is_orcid_branded(self, make_app):
        html = main(page(make_app, signed=False))
        button = re.search(r'<a class="button orcid-sign-in"[^>]*>(.*?)</a>', html, re.S)
        assert button is not None
        assert '<img src="/static/orcid-id.svg" alt=""' in button[1]
        assert text(button[1]) == "Sign in with ORCID"


class TestIndexStatus:
    def test_signed_in_index_says_not_checked_yet_then_the_cached_decision(self, make_app):
        app = make_app("allowed")
        client = signed_in(app)
        before = text(main(client.get("/").get_data(as_text=True)))
        assert "SAIL cohort extract Not checked yet: check now" in before
        client.get("/datasets/sail")
        after = text(main(client.get("/").get_data(as_text=True)))
        assert "SAIL cohort extract Access granted" in after

    def test_a_refusal_shows_as_no_access_yet(self, make_app):
        app = make_app("refused")
        client = signed_in(app)
        client.get("/datasets/sail")
        seen = text(main(client.get("/").get_data(as_text=True)))
        assert "SAIL cohort extract No access yet: see why" in seen


class TestNoOrcidJargon:
    @pytest.mark.parametrize("reader", ["allowed", "refused"])
    def test_no_put_code_or_provider_label_on_the_page(self, make_app, reader):
        seen = text(page(make_app, reader))
        assert "put-code" not in seen.lower()
        assert "provider" not in seen.lower()

    def test_what_met_a_requirement_names_the_source_in_words(self, make_app):
        seen = text(main(page(make_app, "allowed")))
        assert 'met by "Safe Researcher Training" from ' in seen
        assert "added by UK Data Service" in seen

    def test_a_refused_page_links_to_the_researchers_orcid_record(self, make_app):
        html = main(page(make_app, "refused"))
        assert f'<a class="orcid-id" href="https://orcid.org/{RESEARCHER}"' in html


class TestOrcidIdDisplay:
    def test_the_header_shows_the_full_uri_with_the_icon_linked_to_the_record(self, make_app):
        html = page(make_app, path="/")
        link = re.search(r'<a class="orcid-id" href="([^"]+)"[^>]*>(.*?)</a>', html, re.S)
        assert link is not None
        assert link[1] == f"https://orcid.org/{RESEARCHER}"
        assert '<img src="/static/orcid-id.svg" alt="ORCID iD"' in link[2]
        assert text(link[2]) == f"ORCID iD https://orcid.org/{RESEARCHER}"

    def test_the_disconnect_page_names_the_researcher_by_the_full_uri(self, make_app):
        body = main(page(make_app, path="/disconnect"))
        assert f'<a class="orcid-id" href="https://orcid.org/{RESEARCHER}"' in body

    def test_the_sandbox_shows_its_own_host(self, make_app):
        html = page(make_app, path="/", ORCID_BASE_URL="https://sandbox.orcid.org")
        assert f'href="https://sandbox.orcid.org/{RESEARCHER}"' in html
        assert "https://orcid.org/" + RESEARCHER not in html

    def test_the_icon_is_served_by_us_as_svg(self, make_app):
        with make_app().test_client().get("/static/orcid-id.svg") as response:
            assert response.status_code == 200
            assert response.mimetype == "image/svg+xml"
            assert 'fill="#A6CE39"' in response.get_data(as_text=True)

    def test_signed_in_pages_offer_disconnect(self, make_app):
        html = page(make_app, path="/")
        nav = html.split('<nav aria-label="Account">', 1)[1].split("</nav>", 1)[0]
        assert '<a href="/disconnect">Disconnect</a>' in nav


class TestAdviceWhenTheRecordCannotBeRead:
    @pytest.mark.parametrize("reader", ["locked", "deactivated", "unclaimed", "malformed"])
    def test_says_contact_orcid_support_with_the_link(self, make_app, reader):
        html = main(page(make_app, reader))
        assert "contact ORCID support" in text(html)
        assert '<a href="https://support.orcid.org/">https://support.orcid.org/</a>' in html

    def test_a_merged_record_offers_sign_out_and_sign_in_with_the_primary_id(self, make_app):
        html = main(page(make_app, "deprecated"))
        seen = text(html)
        assert f"sign out and sign in with ORCID iD https://orcid.org/{PRIMARY}," in seen
        assert f'href="https://orcid.org/{PRIMARY}"' in html
        assert re.search(
            r'<form method="post" action="/logout">\s*<input type="hidden" name="csrf"', html
        )

    def test_an_unreadable_part_says_so_and_names_the_steward(self, make_app):
        html = main(page(make_app, "forbidden", STEWARD_CONTACT="steward@example.org"))
        seen = text(html)
        assert "we could not read part of your ORCID record" in seen
        assert '<a class="contact" href="mailto:steward@example.org">' in html
        assert not VISIBILITY_ASKS.search(seen)


class TestStewardContact:
    @pytest.mark.parametrize("reader", ["refused", "unreadable-item", "locked", "nothing"])
    def test_refusals_give_the_steward_contact(self, make_app, reader):
        html = main(page(make_app, reader, STEWARD_CONTACT="https://example.org/data-access"))
        assert '<a class="contact" href="https://example.org/data-access">' in html

    def test_allowed_page_does_not_ask_for_the_steward(self, make_app):
        html = main(page(make_app, "allowed", STEWARD_CONTACT="steward@example.org"))
        assert "mailto:" not in html

    def test_nothing_found_says_we_see_only_public_entries_without_asking_to_change_them(
        self, make_app
    ):
        html = main(page(make_app, "nothing", STEWARD_CONTACT="steward@example.org"))
        seen = text(html)
        assert "shared only with trusted organizations does not appear here" in seen
        assert not VISIBILITY_ASKS.search(seen)


class TestDeniedPage:
    def test_explains_why_we_ask_and_offers_to_grant_again(self, make_app):
        html = make_app().test_client().get("/callback?error=access_denied&state=s")
        seen = text(main(html.get_data(as_text=True)))
        assert "Why we ask" in seen
        assert "We never change your ORCID record unless you ask us to" in seen
        assert "Sign in with ORCID again" in seen


class TestSiteSettings:
    def test_site_name_titles_every_page(self, make_app):
        html = page(make_app, path="/", signed=False, SITE_NAME="Secure Data Portal")
        assert "<title>Restricted datasets · Secure Data Portal</title>" in html
        assert re.search(r'<a class="brand" href="/">\s*Secure Data Portal</a>', html)

    def test_a_logo_file_is_served_at_logo_and_shown(self, make_app, tmp_path):
        logo = tmp_path / "logo.svg"
        logo.write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
        app = make_app(LOGO_PATH=str(logo))
        html = app.test_client().get("/").get_data(as_text=True)
        assert '<img class="logo" src="/logo" alt=""' in html
        with app.test_client().get("/logo") as response:
            assert response.status_code == 200
            assert response.mimetype == "image/svg+xml"

    def test_a_logo_url_under_public_url_is_used_as_is(self, make_app):
        html = page(
            make_app,
            path="/",
            signed=False,
            PUBLIC_URL="https://data.example.org",
            LOGO_PATH="https://data.example.org/brand/logo.png",
        )
        assert 'src="https://data.example.org/brand/logo.png"' in html

    def test_without_a_logo_file_logo_is_404(self, make_app):
        assert make_app().test_client().get("/logo").status_code == 404

    @pytest.mark.parametrize(
        ("environ", "problem"),
        [
            ({"LOGO_PATH": "https://cdn.example.net/logo.png"}, "LOGO_PATH: "),
            (
                {"PUBLIC_URL": "https://data.example.org", "LOGO_PATH": "https://x.org/l.png"},
                "is not under PUBLIC_URL",
            ),
            ({"LOGO_PATH": "/nonexistent/logo.png"}, "is not a file"),
            ({"LOGO_PATH": "data:image/png;base64,AAAA"}, "LOGO_PATH: "),
            ({"STEWARD_CONTACT": "call Bob"}, "STEWARD_CONTACT: 'call Bob' is neither"),
            ({"STEWARD_CONTACT": "a@b.org, c@d.org"}, "STEWARD_CONTACT: "),
            ({"STEWARD_CONTACT": "javascript:alert(1)"}, "STEWARD_CONTACT: "),
            ({"SITE_NAME": "x" * 81}, "SITE_NAME: "),
        ],
        ids=[
            "logo-elsewhere",
            "logo-other-origin",
            "logo-missing",
            "logo-data-url",
            "contact-words",
            "contact-two",
            "contact-script",
            "long-name",
        ],
    )
    def test_bad_page_settings_stop_the_start_naming_the_variable(
        self, write_policy, environ, problem
    ):
        settings = Settings.from_env(
            {
                "SECRET_KEY": "unit-test-secret-key-0123",
                "POLICY_PATH": str(write_policy(POLICY)),
                **CLIENT,
                **environ,
            }
        )
        with pytest.raises(ConfigError) as raised:
            create_app(settings, orcid_reader=READERS["allowed"]())
        assert problem in raised.value.message

    def test_a_logo_of_the_wrong_type_is_refused(self, write_policy, tmp_path):
        logo = tmp_path / "logo.html"
        logo.write_text("<script>alert(1)</script>")
        settings = Settings.from_env({**CLIENT, "LOGO_PATH": str(logo)})
        assert any(p.startswith("LOGO_PATH: ") for p in settings.page_problems())

    @pytest.mark.parametrize(
        ("contact", "href"),
        [
            ("steward@example.org", "mailto:steward@example.org"),
            ("mailto:steward@example.org", "mailto:steward@example.org"),
            ("https://example.org/access", "https://example.org/access"),
        ],
    )
    def test_steward_contact_becomes_a_link(self, contact, href):
        assert Settings(steward_contact=contact).steward_href == href


def test_the_icon_is_a_green_circle_with_id():
    svg = (STATIC / "orcid-id.svg").read_text()
    assert '<circle cx="16" cy="16" r="16" fill="#A6CE39"/>' in svg
    assert UKDS  # the test policy's trusted source is the one the pages name


def test_pages_see_a_policy_edit_as_auth_does(make_app):
    app = make_app()
    policy_file = app.extensions["gatekeeper"].policy_file
    policy_file.check_interval = 0  # look at the files on every request
    policy_file.path.write_text(POLICY.replace("SAIL cohort extract", "SAIL cohort, renamed"))
    client = app.test_client()
    client.get("/")  # notices the edit and starts the reload, off the request path
    policy_file.wait(timeout=10)
    assert "SAIL cohort, renamed" in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize("path", ["/logout", "/logout/everywhere", "/disconnect"])
def test_the_page_after_signing_out_no_longer_shows_the_researcher(make_app, path):
    client = signed_in(make_app())
    response = client.post(path, data={"csrf": "csrf-token-for-tests"})
    assert response.status_code in (200, 302), response.status_code
    if response.status_code == 200:
        body = response.get_data(as_text=True)
        assert "Signed in as" not in body and RESEARCHER not in body
    with client.session_transaction() as session:
        assert "researcher" not in session and "csrf" not in session
