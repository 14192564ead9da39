"""The steward console: stewards only, what it shows from the decision log, revoke, CSV."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import re
import secrets
import time
from pathlib import Path

import pytest

from app import create_app
from app.cache import session_record
from app.errors import ConfigError
from app.saved_record import SavedRecord
from app.settings import Settings
from app.web.steward import safe_cell
from tests import orcid_json
from tests.conftest import NIHR, POLICY, RESEARCHER, UKDS

CLIENT = {"ORCID_CLIENT_ID": "APP-ABCDEFGHIJKLMNOP", "ORCID_CLIENT_SECRET": "secret"}
STEWARD = "0000-0001-5109-3700"
REFUSED = "0000-0002-1694-233X"  # a check digit X, written in lower case in STEWARD_ORCIDS
CSRF = "csrf-token-for-tests"


def days(n: int) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=n)).isoformat()


class Records:
    """Saved records for several researchers, read as ORCID would serve them."""

    def __init__(self, items_by_orcid: dict[str, list[dict]]):
        self.records = {
            orcid: SavedRecord(
                {
                    "orcid": orcid,
                    "qualifications": orcid_json.summaries(orcid, items),
                    "items": {str(i["put-code"]): i for i in items},
                }
            )
            for orcid, items in items_by_orcid.items()
        }

    def read_qualifications(self, orcid, wanted=lambda q: True, token=None):
        return self.records[orcid].read_qualifications(orcid, wanted, token)


def researchers() -> Records:
    return Records(
        {
            # Qualified, with the Safe Researcher Training ending in ten days.
            RESEARCHER: [
                orcid_json.qualification(
                    1,
                    owner=RESEARCHER,
                    src=orcid_json.source(client_id=UKDS),
                    start=days(-300),
                    end=days(10),
                ),
                orcid_json.qualification(
                    2,
                    owner=RESEARCHER,
                    title="Good Clinical Practice",
                    src=orcid_json.source(client_id=NIHR),
                ),
            ],
            # The researcher typed the training in: wrong_source.
            REFUSED: [
                orcid_json.qualification(
                    7, owner=REFUSED, src=orcid_json.source(orcid=REFUSED, name="UKDS")
                )
            ],
            STEWARD: [],
        }
    )


@pytest.fixture
def make_app(write_policy):
    def make(**environ):
        settings = Settings.from_env(
            {
                "SECRET_KEY": "unit-test-secret-key-0123",
                "POLICY_PATH": str(write_policy(POLICY)),
                "STEWARD_ORCIDS": STEWARD,
                **CLIENT,
                **environ,
            }
        )
        return create_app(settings, orcid_reader=researchers())

    return make


@pytest.fixture
def app(make_app):
    return make_app()


def signed_in(app, orcid: str):
    """A client whose cookie names a session the store holds, as a real sign-in leaves it."""
    client = app.test_client()
    sid = secrets.token_urlsafe(16)
    app.extensions["gatekeeper"].store.put_session(sid, session_record(orcid, None), 3600)
    with client.session_transaction() as session:
        session["researcher"] = {"orcid": orcid, "name": None, "sid": sid, "amr": []}
        session["csrf"] = CSRF
    return client


@pytest.fixture
def decided(app):
    """Two researchers have opened the SAIL dataset's page: one allowed, one refused."""
    for orcid in (RESEARCHER, REFUSED):
        assert signed_in(app, orcid).get("/datasets/sail").status_code == 200
    return app


def text(html: str) -> str:
    """What a reader sees: tags dropped, entities read, spaces collapsed."""
    from html import unescape

    html = re.sub(r'<img [^>]*alt="([^"]*)"[^>]*>', r" \1 ", html)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def section(html: str, heading_id: str) -> str:
    """The part of the page from one h2 to the next."""
    return html.split(f'<h2 id="{heading_id}">', 1)[1].split("<h2 ", 1)[0]


STEWARD_REQUESTS = [
    ("index", lambda c: c.get("/steward/")),
    ("dataset", lambda c: c.get("/steward/sail")),
    ("csv", lambda c: c.get("/steward/sail.csv")),
    ("revoke", lambda c: c.post("/steward/revoke", data={"csrf": CSRF, "orcid": RESEARCHER})),
]


class TestWhoMayOpenIt:
    @pytest.mark.parametrize(
        "go", [r[1] for r in STEWARD_REQUESTS], ids=[r[0] for r in STEWARD_REQUESTS]
    )
    def test_signed_out_answers_403_with_the_sign_in_link(self, app, go):
        response = go(app.test_client())
        assert response.status_code == 403
        page = response.get_data(as_text=True)
        assert "Sign in to the steward console" in page
        assert 'href="/login?next=/steward/' in page

    @pytest.mark.parametrize(
        "go", [r[1] for r in STEWARD_REQUESTS], ids=[r[0] for r in STEWARD_REQUESTS]
    )
    def test_a_researcher_who_is_no_steward_gets_403_saying_so(self, decided, go):
        response = go(signed_in(decided, REFUSED))
        assert response.status_code == 403
        seen = text(response.get_data(as_text=True))
        assert "Stewards only" in seen
        assert f"You are signed in as ORCID iD https://orcid.org/ {REFUSED}" in seen

    def test_a_non_steward_cannot_revoke(self, decided):
        gk = decided.extensions["gatekeeper"]
        signed_in(decided, REFUSED).post(
            "/steward/revoke", data={"csrf": CSRF, "orcid": RESEARCHER}
        )
        assert gk.checker.cached(RESEARCHER, "sail") is not None

    def test_a_steward_opens_it_and_the_header_links_to_it(self, app):
        response = signed_in(app, STEWARD).get("/steward/")
        assert response.status_code == 200
        assert '<a href="/steward/">Steward console</a>' in response.get_data(as_text=True)

    def test_the_header_shows_no_console_link_to_others(self, app):
        page = signed_in(app, REFUSED).get("/").get_data(as_text=True)
        assert "Steward console" not in page

    def test_a_steward_given_as_a_uri_with_a_lower_case_x_is_one(self, make_app):
        app = make_app(STEWARD_ORCIDS=f"https://orcid.org/{REFUSED.lower()}, {STEWARD}")
        assert signed_in(app, REFUSED).get("/steward/").status_code == 200
        assert signed_in(app, STEWARD).get("/steward/").status_code == 200
        assert signed_in(app, RESEARCHER).get("/steward/").status_code == 403

    def test_without_stewards_nobody_opens_it(self, make_app):
        app = make_app(STEWARD_ORCIDS="")
        assert signed_in(app, STEWARD).get("/steward/").status_code == 403


class TestStewardOrcidsSetting:
    @pytest.mark.parametrize(
        ("value", "named"),
        [
            ("0000-0002-1825-0098", "'0000-0002-1825-0098' is not an ORCID iD"),
            (f"{STEWARD}, steward@example.org", "'steward@example.org' is not an ORCID iD"),
            ("1234, 0000-0002-1825-009", "'1234', '0000-0002-1825-009' are not ORCID iDs"),
        ],
        ids=["check-digit", "email", "two"],
    )
    def test_an_invalid_id_stops_start_up_with_one_line_naming_the_variable(
        self, make_app, value, named
    ):
        with pytest.raises(ConfigError) as raised:
            make_app(STEWARD_ORCIDS=value)
        message = str(raised.value)
        assert message.startswith(f"STEWARD_ORCIDS: {named} ")
        assert "\n" not in message


class TestIndex:
    def test_each_dataset_with_its_counts(self, decided):
        page = signed_in(decided, STEWARD).get("/steward/").get_data(as_text=True)
        row = re.search(
            r"<tr>\s*<th scope=\"row\"><a href=\"/steward/sail[^>]*>.*?</tr>", page, re.S
        )
        assert row is not None
        # With access now, refusals, expiring within 30 days.
        assert re.findall(r"<td>(\d+)</td>", row[0]) == ["1", "1", "1"]
        assert "/steward/open?window=7d" in page


class TestDatasetPage:
    def test_who_has_access_now_and_until_when(self, decided):
        html = signed_in(decided, STEWARD).get("/steward/sail").get_data(as_text=True)
        access = text(section(html, "access"))
        assert RESEARCHER in access
        assert REFUSED not in access
        cached = decided.extensions["gatekeeper"].checker.cached(RESEARCHER, "sail")
        until = decided.extensions["gatekeeper"].checker.cache_until(cached)
        assert until.strftime("%Y-%m-%d %H:%M:%S UTC") in access
        assert "not cached now" not in access

    def test_refusals_by_reason_with_a_bar_drawn_without_inline_style(self, decided):
        html = signed_in(decided, STEWARD).get("/steward/sail").get_data(as_text=True)
        refusals = section(html, "refusals")
        assert "1 refusal." in text(refusals)
        assert re.search(r"<code>wrong_source</code></td>\s*<td>1</td>", refusals)
        assert '<rect width="100" height="10">' in refusals
        assert "style=" not in refusals

    def test_qualifications_expiring_soon(self, decided):
        html = signed_in(decided, STEWARD).get("/steward/sail").get_data(as_text=True)
        expiring = text(section(html, "expiring"))
        assert RESEARCHER in expiring
        assert days(10) in expiring
        assert '"Safe Researcher Training" for safe-researcher (put-code 1)' in expiring

    def test_recent_decisions_are_explained_of_the_researcher(self, decided):
        html = signed_in(decided, STEWARD).get("/steward/sail").get_data(as_text=True)
        recent = text(section(html, "recent"))
        assert f"Refused : {REFUSED}" in recent
        assert f"Allowed : {RESEARCHER}" in recent
        assert "added by the researcher; this dataset needs it from UK Data Service" in recent
        assert "yourself" not in recent
        assert "put-code 7" in recent

    def test_an_access_list_read_short_says_so(self, make_app, monkeypatch):
        # sail's decisions hold three days, so who has access looks back past a 1-day
        # window, to decisions made two days ago: more than the console reads at once.
        app = make_app(POLICY_PATH=str(self.long_held_policy(make_app)))
        log = app.extensions["gatekeeper"].checker.decision_log
        monkeypatch.setattr(log, "_clock", lambda: time.time() - 2 * 86400)
        for orcid in (RESEARCHER, REFUSED):
            assert signed_in(app, orcid).get("/datasets/sail").status_code == 200
        monkeypatch.setattr(log, "_clock", time.time)
        monkeypatch.setattr("app.web.steward.MAX_SCAN", 2)
        steward = signed_in(app, STEWARD)
        html = steward.get("/steward/sail?window=1d").get_data(as_text=True)
        assert RESEARCHER in text(section(html, "access"))
        assert "More decisions than the console reads at once" in text(html)
        monkeypatch.setattr("app.web.steward.MAX_SCAN", 3)
        html = steward.get("/steward/sail?window=1d").get_data(as_text=True)
        assert "More decisions than the console reads at once" not in text(html)

    @staticmethod
    def long_held_policy(make_app):
        path = Path(make_app().extensions["gatekeeper"].settings.policy_path)
        held = path.with_name("held.yaml")
        held.write_text(path.read_text().replace("cache_ttl: 900", "cache_ttl: 259200"))
        return held

    def test_an_unknown_window_shows_the_default(self, decided):
        html = signed_in(decided, STEWARD).get("/steward/sail?window=1y").get_data(as_text=True)
        assert '<option value="7d" selected>' in html
        assert "Refusals in the last 7 days" in html

    def test_an_unknown_dataset_answers_404(self, decided):
        assert signed_in(decided, STEWARD).get("/steward/nope").status_code == 404
        assert signed_in(decided, STEWARD).get("/steward/nope.csv").status_code == 404

    def test_a_dataset_nobody_asked_for_says_so(self, decided):
        seen = text(signed_in(decided, STEWARD).get("/steward/open").get_data(as_text=True))
        assert "Nobody has access now." in seen
        assert "No refusals in the last 7 days." in seen
        assert "No decisions in the last 7 days." in seen


class TestRevoke:
    def test_drops_the_cached_decisions_and_says_so(self, decided):
        gk = decided.extensions["gatekeeper"]
        steward = signed_in(decided, STEWARD)
        response = steward.post(
            "/steward/revoke", data={"csrf": CSRF, "orcid": RESEARCHER, "dataset": "sail"}
        )
        assert response.status_code == 303
        assert response.headers["Location"] == "/steward/sail"
        assert gk.checker.cached(RESEARCHER, "sail") is None
        assert gk.checker.cached(REFUSED, "sail") is not None  # nobody else's
        seen = text(steward.get("/steward/sail").get_data(as_text=True))
        assert f"Cached decisions for {RESEARCHER} were dropped." in seen
        assert "not cached now: decided afresh at their next request" in seen

    def test_the_next_check_reads_orcid_again(self, decided):
        gk = decided.extensions["gatekeeper"]
        before = len(gk.checker.decision_log.entries(orcid=RESEARCHER))
        signed_in(decided, RESEARCHER).get("/datasets/sail")  # cached: no new decision
        assert len(gk.checker.decision_log.entries(orcid=RESEARCHER)) == before
        signed_in(decided, STEWARD).post(
            "/steward/revoke", data={"csrf": CSRF, "orcid": RESEARCHER}
        )
        signed_in(decided, RESEARCHER).get("/datasets/sail")
        assert len(gk.checker.decision_log.entries(orcid=RESEARCHER)) == before + 1

    @pytest.mark.parametrize(
        ("form", "status"),
        [
            ({"csrf": "wrong", "orcid": RESEARCHER}, 400),
            ({"orcid": RESEARCHER}, 400),
            ({"csrf": CSRF, "orcid": "0000-0002-1825-0098"}, 400),
            ({"csrf": CSRF}, 400),
        ],
        ids=["wrong-csrf", "no-csrf", "bad-id", "no-id"],
    )
    def test_a_bad_form_changes_nothing(self, decided, form, status):
        response = signed_in(decided, STEWARD).post("/steward/revoke", data=form)
        assert response.status_code == status
        assert decided.extensions["gatekeeper"].checker.cached(RESEARCHER, "sail") is not None

    def test_without_a_dataset_it_returns_to_the_console(self, decided):
        response = signed_in(decided, STEWARD).post(
            "/steward/revoke", data={"csrf": CSRF, "orcid": RESEARCHER, "dataset": "nope"}
        )
        assert response.headers["Location"] == "/steward/"


class TestCsvExport:
    def rows(self, app) -> list[dict]:
        response = signed_in(app, STEWARD).get("/steward/sail.csv")
        assert response.status_code == 200
        assert response.mimetype == "text/csv"
        assert response.headers["Content-Disposition"].startswith(
            'attachment; filename="decisions-sail-7d-'
        )
        return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))

    def test_one_row_per_decision_in_the_window_newest_first(self, decided):
        rows = self.rows(decided)
        assert [(r["orcid"], r["outcome"], r["reasons"]) for r in rows] == [
            (REFUSED, "deny", "missing wrong_source"),
            (RESEARCHER, "allow", ""),
        ]
        assert rows[1]["access_until"] and not rows[0]["access_until"]
        assert rows[0]["dataset"] == "sail"

    def test_the_explanation_survives_the_round_trip(self, decided):
        explanation = self.rows(decided)[0]["explanation"].split("\n")
        assert explanation[0] == f'{REFUSED} may not open "SAIL cohort extract" (sail).'
        assert any("added by the researcher" in line for line in explanation)

    @pytest.mark.parametrize(
        ("value", "written"),
        [
            ('=HYPERLINK("https://evil")', '\'=HYPERLINK("https://evil")'),
            ("+1", "'+1"),
            ("-1+2", "'-1+2"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("0000-0002-1825-0097", "0000-0002-1825-0097"),
            ("wrong_source", "wrong_source"),
            ("", ""),
        ],
    )
    def test_a_cell_that_starts_like_a_formula_gets_a_quote(self, value, written):
        assert safe_cell(value) == written

    def test_a_hostile_title_is_never_a_formula(self, write_policy):
        hostile = '=HYPERLINK("https://evil.example/","Safe Researcher Training")'
        settings = Settings.from_env(
            {
                "SECRET_KEY": "unit-test-secret-key-0123",
                "POLICY_PATH": str(write_policy(POLICY)),
                "STEWARD_ORCIDS": STEWARD,
                **CLIENT,
            }
        )
        reader = Records(
            {
                RESEARCHER: [
                    # No title in the rule: any title with the identifier is a candidate.
                    orcid_json.qualification(
                        1,
                        owner=RESEARCHER,
                        title=hostile,
                        external_ids=[("uri", "https://example.org/quals/hsr")],
                    )
                ]
            }
        )
        app = create_app(settings, orcid_reader=reader)
        signed_in(app, RESEARCHER).get("/datasets/sail")
        body = signed_in(app, STEWARD).get("/steward/sail.csv").get_data(as_text=True)
        assert "HYPERLINK" in body  # the title reached the export
        for row in csv.reader(io.StringIO(body)):
            for cell in row:
                assert not cell.startswith(("=", "+", "-", "@")), cell


class TestTextOthersTyped:
    # gcp's rule takes any title that starts so: the rest is the researcher's to type.
    FORGED = (
        "Good Clinical Practice\n"
        '  [met]     "Good Clinical Practice": met by "GCP", valid until 2099-01-01.\u202e'
    )

    @pytest.fixture
    def hostile(self, write_policy):
        """SAIL's page opened by a researcher whose refused item's title forges a line."""

        def make(policy_text=POLICY):
            settings = Settings.from_env(
                {
                    "SECRET_KEY": "unit-test-secret-key-0123",
                    "POLICY_PATH": str(write_policy(policy_text)),
                    "STEWARD_ORCIDS": STEWARD,
                    **CLIENT,
                }
            )
            item = orcid_json.qualification(
                7, owner=REFUSED, title=self.FORGED, src=orcid_json.source(orcid=REFUSED)
            )
            app = create_app(settings, orcid_reader=Records({REFUSED: [item]}))
            assert signed_in(app, REFUSED).get("/datasets/sail").status_code == 200
            return app

        return make

    def test_a_title_cannot_forge_a_line_of_the_explanation(self, hostile):
        steward = signed_in(hostile(), STEWARD)
        page = steward.get("/steward/sail").get_data(as_text=True)
        pre = section(page, "recent").split('<pre class="explanation">', 1)[1]
        explanation = html.unescape(pre.split("</pre>")[0])
        assert not any(line.lstrip().startswith("[met]") for line in explanation.splitlines())
        assert "\\u000a" in explanation and "\\u202e" in explanation
        assert "\u202e" not in page
        body = steward.get("/steward/sail.csv").get_data(as_text=True)
        [row] = list(csv.reader(io.StringIO(body)))[1:]
        assert not any(line.startswith("[met]") for line in row[-1].splitlines())

    def test_decisions_logged_under_a_qualification_since_renamed_still_show(
        self, hostile, write_policy
    ):
        app = hostile()
        renamed = POLICY.replace("  safe-researcher:", "  safe-researcher-v2:").replace(
            "require: [safe-researcher,", "require: [safe-researcher-v2,"
        )
        assert renamed != POLICY
        write_policy(renamed)  # the same file: the service reloads it
        policy_file = app.extensions["gatekeeper"].checker.policy_file
        give_up = time.monotonic() + 10
        while "safe-researcher-v2" not in policy_file.current.qualifications:
            assert time.monotonic() < give_up, "the edit was never loaded"
            policy_file.refresh()
            time.sleep(0.05)
        steward = signed_in(app, STEWARD)
        for path in ("/steward/sail", "/steward/sail.csv"):
            response = steward.get(path)
            assert response.status_code == 200, path
        assert "no longer in the policy" in steward.get("/steward/sail").get_data(as_text=True)
