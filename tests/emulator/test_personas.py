"""Fixture files: relative dates, ORCID iDs with check digits, and every problem reported."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest

from app.emulator.personas import (
    FixtureError,
    PartialDate,
    is_orcid_id,
    load_fixtures,
    orcid_check_digit,
    resolve_date,
)

TODAY = dt.date(2026, 1, 31)


class TestRelativeDates:
    @pytest.mark.parametrize(
        "value, expected",
        [
            ("today", PartialDate(2026, 1, 31)),
            ("+1y", PartialDate(2027, 1, 31)),
            ("-30d", PartialDate(2026, 1, 1)),
            ("+2w", PartialDate(2026, 2, 14)),
            ("-2m", PartialDate(2025, 11, 30)),
            ("+1m", PartialDate(2026, 2, 28)),  # no 31 February: the month's last day
            (2025, PartialDate(2025)),
            ("2025-06", PartialDate(2025, 6)),
            (dt.date(2025, 6, 30), PartialDate(2025, 6, 30)),  # YAML's reading of 2025-06-30
            ("2025-06-30", PartialDate(2025, 6, 30)),
        ],
    )
    def test_date_resolves_against_today(self, value, expected):
        assert resolve_date(value, TODAY) == expected

    @pytest.mark.parametrize("value", ["tomorrow", "+1x", "2025-13", "2025-02-30", 1899])
    def test_bad_date_is_a_fixture_error(self, value):
        with pytest.raises(FixtureError):
            resolve_date(value, TODAY)

    def test_relative_dates_in_a_file_resolve_when_it_is_loaded(self, tmp_path):
        path = tmp_path / "personas.yaml"
        path.write_text(
            textwrap.dedent("""
            personas:
              - key: someone
                orcid: 0000-0002-1825-0097
                name: {given: Josiah, family: Carberry}
                qualifications:
                  - {put_code: 1, title: Course, source: {self: true}, start: -1y, end: +1m}
        """)
        )
        item = load_fixtures(path, today=TODAY).personas[0].qualifications[0]
        assert (item.start, item.end) == (PartialDate(2025, 1, 31), PartialDate(2026, 2, 28))
        assert item.created == dt.date(2025, 1, 31)  # defaults to the start date


class TestOrcidIds:
    @pytest.mark.parametrize(
        "orcid", ["0000-0002-1825-0097", "0000-0002-1694-233X", "0000-0001-5109-3700"]
    )
    def test_known_ids_pass_the_check_digit(self, orcid):
        assert is_orcid_id(orcid)

    def test_a_wrong_check_digit_fails(self):
        assert not is_orcid_id("0000-0002-1825-0098")

    def test_check_digit_can_be_x(self):
        assert orcid_check_digit("000000021694233") == "X"


class TestFixtureFile:
    def test_every_problem_is_reported_with_its_place(self, tmp_path):
        path = tmp_path / "broken.yaml"
        path.write_text(
            textwrap.dedent("""
            clients:
              - {client_id: APP-X, client_secret: s, redirect_uris: somewhere}
            personas:
              - key: bad-id
                orcid: 0000-0002-1825-0098
                name: {given: A}
              - key: bad-item
                orcid: 0000-0002-1825-0097
                name: {given: B}
                qualifications:
                  - {put_code: 1, title: T, source: {self: true}, end: +1y}
                  - {put_code: 2, title: T, source: {self: true}, colour: red}
                  - {put_code: 3, title: T, source: {}}
        """)
        )
        with pytest.raises(FixtureError) as caught:
            load_fixtures(path)
        problems = "\n".join(caught.value.problems)
        assert "clients[0].redirect_uris" in problems
        assert "personas[bad-id].orcid" in problems
        assert "personas[bad-item].qualifications[0].end: an end date needs a start" in problems
        assert "personas[bad-item].qualifications[1]: unknown key 'colour'" in problems
        assert "personas[bad-item].qualifications[2].source: give 'self: true'" in problems

    def test_deprecated_persona_points_at_its_primary_by_key(self):
        assert load_fixtures().persona("deprecated").primary == "0009-0000-0000-0017"


class TestShippedPersonas:
    def test_shipped_personas_cover_the_cases_integration_tests_need(self):
        keys = {p.key for p in load_fixtures().personas}
        assert {
            "qualified",
            "self-asserted",
            "expired",
            "not-yet-valid",
            "self-issued",
            "many-items",
            "locked",
        } <= keys

    def test_every_shipped_orcid_id_has_a_valid_check_digit(self):
        assert all(is_orcid_id(p.orcid) for p in load_fixtures().personas)

    def test_many_items_has_forty_items(self):
        assert len(load_fixtures().persona("many-items").qualifications) == 40

    def test_shipped_demo_client_has_the_demo_redirect_uris(self):
        client = load_fixtures().clients["APP-GATEKEEPERDEMO01"]
        assert client.client_secret == "demo-secret"
        assert client.accepts_redirect("http://127.0.0.1:8000/callback")
        assert client.accepts_redirect("http://localhost:8000/callback")
        assert not client.accepts_redirect("http://127.0.0.1:8001/callback")
