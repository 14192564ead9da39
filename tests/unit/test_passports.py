"""GA4GH visas: keys, the claims each decision yields, and signatures another library checks.

PyJWT verifies what joserfc signs, so a bug in the signer is not mirrored in the check.
"""

from __future__ import annotations

import datetime as dt
import textwrap

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.decision import THIS_SERVICE, CandidateVerdict, Decision, RequirementResult
from app.passports import (
    JWKS_PATH,
    SigningKey,
    SigningKeyError,
    VisaSettings,
    VisaSigner,
    decode_unverified,
    visa_claims,
)
from app.policy import load_policy

ORCID = "0000-0002-1825-0097"
ISSUER = "https://data.example.org"
NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
POLICY = """
version: 1
organisation: https://example.org/dac
qualifications:
  srt:
    title: Safe Researcher Training
    sources: [self-asserted]
    researcher_status: https://doi.org/10.1038/s41431-018-0219-y
  dua:
    title: Accepted the data use agreement
    sources: [self-issued]
    issue:
      organization: {name: Example DAC, city: Swansea, country: GB, ror: 053fq8t95}
      url: https://example.org/dua
      external_id: {type: other-id, value: "dua-{orcid}-{version}"}
      valid_for_days: 365
      accept_terms: {url: https://example.org/dua/terms, version: "1"}
datasets:
  cohort:
    paths: [/datasets/cohort/]
    require: [srt, dua]
    visa: {value: https://example.org/datasets/cohort, source: https://example.org/dac/7}
  plain:
    paths: [/datasets/plain/]
    require: [srt]
"""


def pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(POLICY))
    return load_policy(path)


def decision(
    policy,
    dataset,
    allowed,
    met=(),
    *,
    valid_until=None,
    srt_until=None,
    dua_by=THIS_SERVICE,
    dua_ours=True,
):
    results = []
    for name in ("srt", "dua"):
        if name in [r.options[0] for r in policy.datasets[dataset].require]:
            until = srt_until if name == "srt" else None
            added_by = dua_by if name == "dua" else "UK Data Service"
            ours = dua_ours if name == "dua" else False
            met_by = CandidateVerdict(
                1, name, name, None, added_by, None, until, by_this_service=ours
            )
            results.append(RequirementResult((name,), name in met, 1, name, until, (met_by,)))
    return Decision(
        orcid=ORCID,
        dataset=dataset,
        allowed=allowed,
        requirements=tuple(results),
        policy_version=policy.version,
        decided_at=NOW - dt.timedelta(minutes=5),
        valid_until=valid_until,
    )


def bound(hours):
    return lambda decision: decision.decided_at + dt.timedelta(hours=hours)


def claims_for(policy, decisions, lifetime=3600, cache_hours=1, not_after=None):
    return visa_claims(
        policy,
        decisions,
        orcid=ORCID,
        settings=VisaSettings(ISSUER, "https://orcid.org", lifetime),
        cache_until=bound(cache_hours),
        now=NOW,
        not_after=not_after,
    )


def by_type(claims):
    return {c["ga4gh_visa_v1"]["type"]: c for c in claims}


class TestKeys:
    def test_rsa_and_p256_keys_load_with_their_algorithm_and_a_thumbprint_kid(self):
        rsa_key = SigningKey.from_pem(pem(rsa.generate_private_key(65537, 2048)), "K")
        ec_key = SigningKey.from_pem(pem(ec.generate_private_key(ec.SECP256R1())), "K")
        assert (rsa_key.alg, ec_key.alg) == ("RS256", "ES256")
        assert rsa_key.kid and ec_key.kid and rsa_key.kid != ec_key.kid
        for key in (rsa_key, ec_key):
            public = key.public_jwk()
            assert public["kid"] == key.kid and public["alg"] == key.alg
            assert "d" not in public and "p" not in public  # never the private parts

    @pytest.mark.parametrize(
        "make, says",
        [
            (lambda: pem(rsa.generate_private_key(65537, 1024)), "at least 2048 bits"),
            (lambda: pem(ec.generate_private_key(ec.SECP384R1())), "P-256"),
            (lambda: b"-----BEGIN PRIVATE KEY-----\nnonsense\n", "not an RSA or EC"),
        ],
        ids=["rsa-1024", "p-384", "garbage"],
    )
    def test_other_keys_are_refused_naming_the_setting(self, make, says):
        with pytest.raises(SigningKeyError) as raised:
            SigningKey.from_pem(make(), "PASSPORT_SIGNING_KEY")
        assert raised.value.message.startswith("PASSPORT_SIGNING_KEY: ") and says in str(
            raised.value
        )

    def test_a_missing_file_is_named(self, tmp_path):
        with pytest.raises(SigningKeyError, match="PASSPORT_SIGNING_KEY: cannot read"):
            SigningKey.from_file(str(tmp_path / "none.pem"), "PASSPORT_SIGNING_KEY")

    def test_jwks_publishes_the_signing_key_and_older_ones_once(self):
        new, old = SigningKey.generate(), SigningKey.generate()
        signer = VisaSigner(new, (old, new))
        assert [k["kid"] for k in signer.jwks()["keys"]] == [new.kid, old.kid]

    def test_another_library_verifies_what_we_sign(self, policy):
        signer = VisaSigner(SigningKey.from_pem(pem(rsa.generate_private_key(65537, 2048)), "K"))
        [claims] = claims_for(policy, [decision(policy, "plain", True, ["srt"])])[:1]
        token = signer.sign(claims, ISSUER + JWKS_PATH)
        header, _ = decode_unverified(token)
        assert header == {
            "alg": "RS256",
            "typ": "vnd.ga4gh.visa+jwt",
            "kid": signer.current.kid,
            "jku": ISSUER + JWKS_PATH,
        }
        [jwk] = signer.jwks()["keys"]
        key = pyjwt.PyJWK(jwk).key
        verified = pyjwt.decode(
            token, key, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False}
        )
        assert verified == claims
        tampered = token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB")
        with pytest.raises(pyjwt.InvalidSignatureError):
            pyjwt.decode(tampered, key, algorithms=["RS256"], options={"verify_exp": False})


class TestClaims:
    def test_an_allowed_dataset_is_a_grant_by_the_dac_with_the_policys_urls(self, policy):
        claims = claims_for(policy, [decision(policy, "cohort", True, ["srt", "dua"])])
        grant = by_type(claims)["ControlledAccessGrants"]
        assert grant["iss"] == ISSUER and grant["sub"] == f"https://orcid.org/{ORCID}"
        assert grant["iat"] == int(NOW.timestamp()) and grant["jti"]
        assert grant["ga4gh_visa_v1"] == {
            "type": "ControlledAccessGrants",
            "asserted": int((NOW - dt.timedelta(minutes=5)).timestamp()),
            "value": "https://example.org/datasets/cohort",
            "source": "https://example.org/dac/7",
            "by": "dac",
        }

    def test_defaults_are_the_datasets_url_and_the_organisation(self, policy):
        [grant] = [
            c
            for c in claims_for(policy, [decision(policy, "plain", True, ["srt"])])
            if c["ga4gh_visa_v1"]["type"] == "ControlledAccessGrants"
        ]
        assert grant["ga4gh_visa_v1"]["value"] == ISSUER + "/datasets/plain/"
        assert grant["ga4gh_visa_v1"]["source"] == "https://example.org/dac"

    def test_a_value_equal_to_another_datasets_default_grants_neither(self, tmp_path, caplog):
        # The steward gave "cohort" the URL "plain" has by default (PUBLIC_URL + its first
        # path), which policy check cannot know: a grant of cohort would read as plain's.
        text = textwrap.dedent(POLICY).replace(
            "value: https://example.org/datasets/cohort", f"value: {ISSUER}/datasets/plain/"
        )
        (tmp_path / "shared.yaml").write_text(text)
        shared = load_policy(tmp_path / "shared.yaml")
        for dataset, met in (("cohort", ["srt", "dua"]), ("plain", ["srt"])):
            claims = claims_for(shared, [decision(shared, dataset, True, met)])
            assert "ControlledAccessGrants" not in by_type(claims), dataset
            assert "ResearcherStatus" in by_type(claims)  # the rest still speaks
        assert [r.dataset for r in caplog.records if r.msg.startswith("no Controlled")] == [
            "cohort",
            "plain",
        ]
        # Under another PUBLIC_URL the two differ again, and each is granted.
        apart = visa_claims(
            shared,
            [decision(shared, "plain", True, ["srt"])],
            orcid=ORCID,
            settings=VisaSettings("https://elsewhere.example", "https://orcid.org", 3600),
            cache_until=bound(1),
            now=NOW,
        )
        grant = by_type(apart)["ControlledAccessGrants"]["ga4gh_visa_v1"]
        assert grant["value"] == "https://elsewhere.example/datasets/plain/"

    def test_a_refused_dataset_is_no_grant_but_met_qualifications_still_speak(self, policy):
        claims = claims_for(policy, [decision(policy, "cohort", False, ["srt"])])
        assert set(by_type(claims)) == {"ResearcherStatus"}
        status = by_type(claims)["ResearcherStatus"]["ga4gh_visa_v1"]
        assert status["value"] == "https://doi.org/10.1038/s41431-018-0219-y"
        assert status["by"] == "system" and status["source"] == "https://example.org/dac"

    def test_terms_accepted_here_are_by_self(self, policy):
        claims = claims_for(policy, [decision(policy, "cohort", True, ["srt", "dua"])])
        terms = by_type(claims)["AcceptedTermsAndPolicies"]["ga4gh_visa_v1"]
        assert terms["value"] == "https://example.org/dua/terms" and terms["by"] == "self"

    @pytest.mark.parametrize("name", ["UK Data Service", "this service"])
    def test_terms_met_by_another_providers_item_are_no_acceptance_here(self, policy, name):
        # The rule may trust another provider's item too; it says nothing of our terms,
        # even should the policy call that provider "this service".
        by_another = decision(policy, "cohort", True, ["srt", "dua"], dua_by=name, dua_ours=False)
        assert "AcceptedTermsAndPolicies" not in by_type(claims_for(policy, [by_another]))

    def test_no_visa_outlives_the_lifetime_the_decision_or_the_qualification(self, policy):
        srt_ends = NOW.date()  # counts until midnight UTC tonight
        midnight = int(dt.datetime(2026, 12, 7, tzinfo=dt.UTC).timestamp())
        claims = claims_for(
            policy,
            [decision(policy, "cohort", True, ["srt", "dua"], srt_until=srt_ends)],
            lifetime=86400,
            cache_hours=2,
        )
        types = by_type(claims)
        cache_bound = int((NOW + dt.timedelta(hours=2) - dt.timedelta(minutes=5)).timestamp())
        assert types["ControlledAccessGrants"]["exp"] == cache_bound
        assert types["ResearcherStatus"]["exp"] == min(midnight, cache_bound)
        short = claims_for(policy, [decision(policy, "plain", True, ["srt"])], lifetime=600)
        assert all(c["exp"] == int(NOW.timestamp()) + 600 for c in short)

    def test_no_visa_outlives_the_token_that_asked_for_it(self, policy):
        # A token with ten minutes left mints visas for ten minutes, not VISA_LIFETIME.
        token_ends = NOW.timestamp() + 600
        claims = claims_for(
            policy, [decision(policy, "plain", True, ["srt"])], not_after=token_ends
        )
        assert claims and all(c["exp"] == int(token_ends) for c in claims)
        assert claims_for(policy, [decision(policy, "plain", True, ["srt"])], not_after=0) == []

    def test_a_lapsed_bound_or_another_policy_version_yields_nothing(self, policy):
        lapsed = claims_for(policy, [decision(policy, "plain", True, ["srt"])], cache_hours=0)
        assert lapsed == []
        old = decision(policy, "plain", True, ["srt"])
        old = Decision(
            **{**{f: getattr(old, f) for f in old.__dataclass_fields__}, "policy_version": "old"}
        )
        assert claims_for(policy, [old]) == []

    def test_one_visa_per_type_and_value_with_the_latest_expiry(self, policy):
        claims = claims_for(
            policy,
            [
                decision(policy, "cohort", False, ["srt"]),
                decision(policy, "plain", True, ["srt"]),
            ],
        )
        statuses = [c for c in claims if c["ga4gh_visa_v1"]["type"] == "ResearcherStatus"]
        assert len(statuses) == 1


def test_the_signing_key_must_be_private_an_older_one_may_be_public():
    public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert SigningKey.from_pem(public, "PASSPORT_PUBLISHED_KEYS").alg == "ES256"
    with pytest.raises(SigningKeyError, match="a public key cannot sign"):
        SigningKey.from_pem(public, "PASSPORT_SIGNING_KEY", signs=True)
