"""GA4GH Passports from a real gatekeeper, checked by a small clearinghouse of our own.

The clearinghouse trusts one (iss, jku) pair, fetches the JWKS from that jku, verifies
each visa with PyJWT (not joserfc, which signs them), and grants a file only while a
valid ControlledAccessGrants visa by a DAC names the dataset holding it. It must grant
exactly what /auth grants, and refuse every forgery below.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import threading
import time

import jwt as pyjwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.passports import JWKS_PATH, SigningKey, VisaSigner
from app.policy import load_policy
from tests.integration.conftest import REPO, sign_in
from tests.integration.test_access_tokens import make_token

LIFETIME = 600
ALGORITHMS = ["RS256", "ES256"]
BY_REQUIRED = {"ControlledAccessGrants", "AcceptedTermsAndPolicies"}


class Clearinghouse:
    """A Passport Clearinghouse that trusts ``issuer`` with ``jku`` and nothing else.

    Its ``catalogue`` says which dataset each file is in: (URL prefix of its files, the
    dataset's grant value). A grant's value is compared with the dataset's exactly, as
    the specification has URL claims compared (never as a prefix of the file's URL: a
    grant of a dataset would then open any dataset nested inside it).
    """

    def __init__(self, issuer: str, jku: str, catalogue: list[tuple[str, str]]):
        self.trusted = {issuer: jku}
        self.catalogue = catalogue
        self.refused: list[str] = []  # why each refused visa was refused

    def keys(self, jku: str) -> dict:
        found = requests.get(jku, timeout=10).json()["keys"]
        return {jwk["kid"]: pyjwt.PyJWK(jwk).key for jwk in found}

    def visas(self, passport: list[str]) -> list[dict]:
        """The visa objects of every visa that passes, with their exp."""
        accepted = []
        for token in passport:
            try:
                header = pyjwt.get_unverified_header(token)
                unverified = pyjwt.decode(token, options={"verify_signature": False})
                if self.trusted.get(unverified.get("iss")) != header.get("jku"):
                    raise pyjwt.InvalidTokenError("untrusted iss and jku pair")
                key = self.keys(header["jku"]).get(header.get("kid"))
                if key is None:
                    raise pyjwt.InvalidTokenError("unknown kid")
                claims = pyjwt.decode(
                    token,
                    key,
                    algorithms=ALGORITHMS,
                    options={"require": ["iss", "sub", "iat", "exp"]},
                )
                visa = claims["ga4gh_visa_v1"]
                for field in ("type", "asserted", "value", "source"):
                    if field not in visa:
                        raise pyjwt.InvalidTokenError(f"no {field}")
                if visa["type"] in BY_REQUIRED and "by" not in visa:
                    raise pyjwt.InvalidTokenError("no by")
                if visa.get("conditions"):
                    raise pyjwt.InvalidTokenError("conditions not supported")
            except (pyjwt.InvalidTokenError, KeyError, ValueError) as exc:
                self.refused.append(type(exc).__name__ + ": " + str(exc))
                continue
            accepted.append({**visa, "exp": claims["exp"], "sub": claims["sub"]})
        return accepted

    def dataset_of(self, url: str) -> str | None:
        """The grant value of the dataset holding the file at ``url``: the catalogue's
        entry with the longest prefix of it, as /auth picks a dataset."""
        holding = [
            (len(prefix), value) for prefix, value in self.catalogue if url.startswith(prefix)
        ]
        return max(holding)[1] if holding else None

    def grants(self, passport: list[str], url: str) -> bool:
        """Whether a valid grant by a DAC names the dataset ``url`` is in."""
        dataset = self.dataset_of(url)
        return dataset is not None and any(
            visa["type"] == "ControlledAccessGrants"
            and visa.get("by") == "dac"
            and visa["value"] == dataset
            for visa in self.visas(passport)
        )


def pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    current, older = ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)
    (folder / "visa-signing.pem").write_text(pem(current))
    (folder / "old-public.pem").write_bytes(
        older.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return folder


@pytest.fixture
def policies(tmp_path):
    folder = tmp_path / "policies"
    shutil.copytree(REPO / "policies", folder)
    return folder


@pytest.fixture
def gatekeeper(start_gatekeeper, redis_url, orcid, keys, policies):
    return start_gatekeeper(
        redis_url=redis_url,
        POLICY_PATH=str(policies),
        PASSPORT_SIGNING_KEY=str(keys / "visa-signing.pem"),
        PASSPORT_PUBLISHED_KEYS=str(keys / "old-public.pem"),
        VISA_LIFETIME=str(LIFETIME),
    )


@pytest.fixture
def clearinghouse(gatekeeper):
    catalogue = [
        (gatekeeper.url + prefix, dataset.visa_value or gatekeeper.url + dataset.paths[0])
        for dataset in load_policy(REPO / "policies").datasets.values()
        for prefix in dataset.paths
    ]
    return Clearinghouse(gatekeeper.url, gatekeeper.url + JWKS_PATH, catalogue)


def passport_of(gatekeeper, browser=None, **headers) -> list[str]:
    session = browser or requests
    response = session.get(f"{gatekeeper.url}/ga4gh/passport", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["ga4gh_passport_v1"]


def file_url(gatekeeper, dataset) -> str:
    return f"{gatekeeper.url}{dataset.paths[0]}some/file.vcf.gz"


def auth_allows(gatekeeper, browser, dataset) -> bool:
    response = browser.get(
        f"{gatekeeper.url}/auth",
        headers={"X-Original-URI": f"{dataset.paths[0]}some/file.vcf.gz"},
        timeout=30,
    )
    assert response.status_code in (200, 403), response.text
    return response.status_code == 200


class TestAgainstAuth:
    @pytest.mark.parametrize("persona", ["qualified", "self-asserted", "expired"])
    def test_the_clearinghouse_grants_exactly_what_auth_grants(
        self, gatekeeper, clearinghouse, persona
    ):
        browser, _ = sign_in(gatekeeper.url, persona)
        passport = passport_of(gatekeeper, browser)
        policy = load_policy(REPO / "policies")
        granted = {
            key: clearinghouse.grants(passport, file_url(gatekeeper, dataset))
            for key, dataset in policy.datasets.items()
        }
        by_auth = {
            key: auth_allows(gatekeeper, browser, dataset)
            for key, dataset in policy.datasets.items()
        }
        assert granted == by_auth
        assert clearinghouse.refused == []
        if persona == "qualified":
            assert granted["sail-cohort"] and not granted["sail-linked"]

    def test_every_visa_says_who_and_until_when(self, gatekeeper, clearinghouse):
        browser, _ = sign_in(gatekeeper.url, "qualified")
        before = int(time.time())
        passport = passport_of(gatekeeper, browser)
        visas = clearinghouse.visas(passport)
        assert visas and len(visas) == len(passport)
        for token, visa in zip(passport, visas, strict=True):
            claims = pyjwt.decode(token, options={"verify_signature": False})
            assert claims["iss"] == gatekeeper.url
            assert claims["sub"].endswith("/0009-0000-0000-0017")
            assert before <= claims["iat"] <= claims["exp"] <= claims["iat"] + LIFETIME
            assert isinstance(visa["value"], str) and isinstance(visa["source"], str)
        types = {visa["type"] for visa in visas}
        assert "ControlledAccessGrants" in types

    def test_the_jwks_publishes_the_signing_key_and_the_older_one(self, gatekeeper, keys):
        published = requests.get(gatekeeper.url + JWKS_PATH, timeout=10).json()["keys"]
        current = SigningKey.from_file(str(keys / "visa-signing.pem"), "k").kid
        older = SigningKey.from_file(str(keys / "old-public.pem"), "k").kid
        assert [k["kid"] for k in published] == [current, older]
        assert all("d" not in k for k in published)
        browser, _ = sign_in(gatekeeper.url, "qualified")
        for token in passport_of(gatekeeper, browser):
            assert pyjwt.get_unverified_header(token)["kid"] == current

    def test_a_token_holders_passport_grants_only_the_tokens_datasets(
        self, gatekeeper, clearinghouse
    ):
        browser, _ = sign_in(gatekeeper.url, "qualified")
        token = make_token(gatekeeper.url, browser, "survey", ["survey-microdata"])
        passport = passport_of(gatekeeper, Authorization=f"Bearer {token}")
        policy = load_policy(REPO / "policies")
        assert clearinghouse.grants(
            passport, file_url(gatekeeper, policy.datasets["survey-microdata"])
        )
        assert not clearinghouse.grants(
            passport, file_url(gatekeeper, policy.datasets["sail-cohort"])
        )

    def test_no_passport_without_a_session_or_a_valid_token(self, gatekeeper):
        for headers in ({}, {"Authorization": "Bearer gkpat_unknown"}):
            response = requests.get(f"{gatekeeper.url}/ga4gh/passport", headers=headers, timeout=10)
            assert response.status_code == 401
            assert "ga4gh_passport_v1" not in response.text

    def test_a_browser_sees_each_visa_decoded_beside_the_jws(self, gatekeeper):
        browser, _ = sign_in(gatekeeper.url, "qualified")
        page = browser.get(
            f"{gatekeeper.url}/ga4gh/passport", headers={"Accept": "text/html"}, timeout=30
        )
        assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
        assert "ControlledAccessGrants" in page.text and "dac" in page.text
        assert re.search(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+", page.text)


def test_no_visa_outlives_the_session_that_asked_for_it(
    start_gatekeeper, redis_url, orcid, keys, policies
):
    # A session with two minutes left mints visas for two minutes, not VISA_LIFETIME.
    gatekeeper = start_gatekeeper(
        redis_url=redis_url,
        POLICY_PATH=str(policies),
        PASSPORT_SIGNING_KEY=str(keys / "visa-signing.pem"),
        VISA_LIFETIME="3600",
        SESSION_LIFETIME="120",
    )
    before = time.time()
    browser, _ = sign_in(gatekeeper.url, "qualified")
    after = time.time()
    expiries = [
        pyjwt.decode(token, options={"verify_signature": False})["exp"]
        for token in passport_of(gatekeeper, browser)
    ]
    assert expiries and all(before + 120 - 1 <= exp <= after + 120 for exp in expiries)


class TestAfterAChange:
    def test_a_policy_edit_that_refuses_the_dataset_drops_its_grant_at_once(
        self, gatekeeper, clearinghouse, policies
    ):
        browser, _ = sign_in(gatekeeper.url, "qualified")
        sail = load_policy(REPO / "policies").datasets["sail-cohort"]
        assert clearinghouse.grants(passport_of(gatekeeper, browser), file_url(gatekeeper, sail))
        datasets = policies / "datasets.yaml"
        rule = "require: [safe-researcher, {any_of: [gcp, hsr]}]"
        staged = policies / "datasets.yaml.new"
        staged.write_text(
            datasets.read_text().replace(rule, "require: [safe-researcher, sail-dua]")
        )
        staged.replace(datasets)

        def granted_by_any_worker() -> bool:
            for _ in range(4):  # each passport on a new connection: either worker
                fresh = requests.Session()
                fresh.cookies.update(browser.cookies)
                if clearinghouse.grants(passport_of(gatekeeper, fresh), file_url(gatekeeper, sail)):
                    return True
            return False

        # Each worker sees an edit within 1.25 s and reloads it off the request path.
        deadline = time.monotonic() + 5
        while granted_by_any_worker():
            assert time.monotonic() < deadline, "the grant outlived the policy edit"
            time.sleep(0.1)

    def test_a_revoked_token_gets_no_passport(self, gatekeeper):
        browser, _ = sign_in(gatekeeper.url, "qualified")
        token = make_token(gatekeeper.url, browser)
        assert passport_of(gatekeeper, Authorization=f"Bearer {token}")
        page = browser.get(f"{gatekeeper.url}/tokens", timeout=10).text
        [token_id] = re.findall(r"/tokens/([0-9a-f]+)/revoke", page)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)[1]
        browser.post(f"{gatekeeper.url}/tokens/{token_id}/revoke", data={"csrf": csrf}, timeout=10)
        response = requests.get(
            f"{gatekeeper.url}/ga4gh/passport",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 401


class ForeignKeys:
    """An attacker's JWKS, served on loopback."""

    def __init__(self, signing_key: SigningKey):
        body = json.dumps(VisaSigner(signing_key).jwks()).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{JWKS_PATH}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class TestForgeries:
    @pytest.fixture
    def genuine(self, gatekeeper, clearinghouse):
        """A genuine grant of sail-cohort, its claims, and the file it opens."""
        browser, _ = sign_in(gatekeeper.url, "qualified")
        sail = load_policy(REPO / "policies").datasets["sail-cohort"]
        url = file_url(gatekeeper, sail)
        for token in passport_of(gatekeeper, browser):
            claims = pyjwt.decode(token, options={"verify_signature": False})
            visa = claims["ga4gh_visa_v1"]
            if visa["type"] == "ControlledAccessGrants" and visa["value"] == (
                clearinghouse.dataset_of(url)
            ):
                assert clearinghouse.grants([token], url)
                return token, claims, url
        raise AssertionError("no grant of sail-cohort")

    def test_a_tampered_visa_is_refused(self, clearinghouse, genuine):
        token, claims, url = genuine
        header, _payload, signature = token.split(".")
        other = {**claims, "sub": claims["sub"].replace("0017", "0025")}
        forged_payload = pyjwt.utils.base64url_encode(json.dumps(other).encode()).decode()
        assert not clearinghouse.grants([f"{header}.{forged_payload}.{signature}"], url)
        assert "InvalidSignatureError" in clearinghouse.refused[-1]

    def test_a_visa_from_our_iss_signed_by_another_key_is_refused(
        self, clearinghouse, genuine, gatekeeper
    ):
        _, claims, url = genuine
        ours = pyjwt.get_unverified_header(genuine[0])
        intruder = SigningKey.generate()
        forged = pyjwt.encode(
            claims,
            intruder.key.private_key,
            algorithm="ES256",
            headers={"kid": ours["kid"], "jku": ours["jku"], "typ": ours["typ"]},
        )
        assert not clearinghouse.grants([forged], url)

    def test_a_visa_whose_jku_is_not_ours_is_refused(self, clearinghouse, genuine):
        _, claims, url = genuine
        intruder = SigningKey.generate()
        elsewhere = ForeignKeys(intruder)
        try:
            forged = VisaSigner(intruder).sign(claims, elsewhere.url)
            # It verifies against the key its own jku names...
            assert pyjwt.decode(
                forged,
                pyjwt.PyJWK(VisaSigner(intruder).jwks()["keys"][0]).key,
                algorithms=ALGORITHMS,
            )
            # ...but that jku is not the one the clearinghouse trusts for our iss.
            assert not clearinghouse.grants([forged], url)
            assert "untrusted iss and jku pair" in clearinghouse.refused[-1]
        finally:
            elsewhere.stop()

    def test_an_expired_visa_is_refused(self, clearinghouse, genuine, keys):
        _, claims, url = genuine
        ours = SigningKey.from_file(str(keys / "visa-signing.pem"), "k", signs=True)
        jku = pyjwt.get_unverified_header(genuine[0])["jku"]
        lapsed = VisaSigner(ours).sign(
            {**claims, "iat": claims["iat"] - 7200, "exp": int(time.time()) - 60}, jku
        )
        assert not clearinghouse.grants([lapsed], url)
        assert "ExpiredSignatureError" in clearinghouse.refused[-1]

    def test_a_grant_of_another_dataset_opens_nothing_here(
        self, gatekeeper, clearinghouse, genuine
    ):
        token, _, _ = genuine
        survey = load_policy(REPO / "policies").datasets["survey-microdata"]
        linked = load_policy(REPO / "policies").datasets["sail-linked"]
        assert not clearinghouse.grants([token], file_url(gatekeeper, survey))
        assert not clearinghouse.grants([token], file_url(gatekeeper, linked))
