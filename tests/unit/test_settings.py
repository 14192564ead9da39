import pytest

from app.errors import ConfigError
from app.settings import Settings

CONTRACT = {
    "ORCID_BASE_URL": ("orcid_base_url", "https://sandbox.orcid.org"),
    "ORCID_API_URL": ("orcid_api_url", "https://api.sandbox.orcid.org/v3.0"),
    "ORCID_CLIENT_ID": ("orcid_client_id", "APP-ABCDEFGHIJKLMNOP"),
    "ORCID_CLIENT_SECRET": ("orcid_client_secret", "s3cret"),
    "ORCID_SCOPE": ("orcid_scope", "/read-limited openid"),
    "PUBLIC_URL": ("public_url", "https://data.example.org"),
    "POLICY_PATH": ("policy_path", "/etc/gatekeeper/policies"),
    "REDIS_URL": ("redis_url", "redis://127.0.0.1:6379/2"),
    "SECRET_KEY": ("secret_key", "x" * 32),
}


class TestSettings:
    def test_defaults_match_the_contract(self):
        settings = Settings.from_env({})
        assert settings.orcid_base_url == "https://orcid.org"
        assert settings.orcid_api_url == "https://pub.orcid.org/v3.0"
        assert settings.orcid_scope == "/authenticate"
        assert settings.policy_path == "policies/"
        assert settings.redis_url is None and settings.secret_key is None
        assert settings.public_url is None

    def test_every_contract_variable_is_read(self):
        settings = Settings.from_env({name: value for name, (_, value) in CONTRACT.items()})
        for name, (attribute, value) in CONTRACT.items():
            assert getattr(settings, attribute) == value, name

    @pytest.mark.parametrize(
        "environ, variable",
        [
            ({"ORCID_API_URL": "pub.orcid.org/v3.0"}, "ORCID_API_URL"),
            ({"PUBLIC_URL": "javascript:alert(1)"}, "PUBLIC_URL"),
            ({"PUBLIC_URL": "https://"}, "PUBLIC_URL"),
            ({"ORCID_BASE_URL": "https:///oauth"}, "ORCID_BASE_URL"),
            ({"ORCID_CLIENT_ID": "APP-ABCDEFGHIJKLMNOP"}, "ORCID_CLIENT_SECRET"),
            ({"REFUSAL_TTL": "soon"}, "REFUSAL_TTL"),
            ({"REFUSAL_TTL": "0"}, "REFUSAL_TTL"),
            ({"AUTH_REDIRECT": "maybe"}, "AUTH_REDIRECT"),
            ({"ORCID_TIMEOUT": "60"}, "ORCID_TIMEOUT"),
            ({"ORCID_TIMEOUT": "nan"}, "ORCID_TIMEOUT"),
            ({"ORCID_TIMEOUT": "-inf"}, "ORCID_TIMEOUT"),
            ({"ORCID_CLIENT_ID": "APP-123", "ORCID_CLIENT_SECRET": "s"}, "ORCID_CLIENT_ID"),
            ({"ORCID_SCOPE": "/read-limited /write-everything"}, "ORCID_SCOPE"),
            ({"ORCID_SCOPE": "read-limited"}, "ORCID_SCOPE"),
            ({"REDIS_URL": "127.0.0.1:6379"}, "REDIS_URL"),
            ({"REDIS_URL": "localhost"}, "REDIS_URL"),
            ({"SESSION_LIFETIME": "12h"}, "SESSION_LIFETIME"),
            ({"GATEKEEPER_DEMO": "sure"}, "GATEKEEPER_DEMO"),
        ],
    )
    def test_a_bad_value_names_its_variable(self, environ, variable):
        with pytest.raises(ConfigError, match=variable):
            Settings.from_env(environ)

    def test_every_problem_is_reported_at_once(self):
        with pytest.raises(ConfigError) as raised:
            Settings.from_env({"ORCID_API_URL": "x", "REFUSAL_TTL": "y"})
        assert "ORCID_API_URL" in raised.value.message and "REFUSAL_TTL" in raised.value.message

    def test_the_service_needs_a_secret_key_and_a_client(self):
        problems = " ".join(Settings.from_env({}).service_problems())
        assert "SECRET_KEY" in problems and "ORCID_CLIENT_ID" in problems
        demo = Settings.from_env(
            {
                "GATEKEEPER_DEMO": "1",
                "ORCID_CLIENT_ID": "APP-ABCDEFGHIJKLMNOP",
                "ORCID_CLIENT_SECRET": "x",
            }
        )
        assert demo.service_problems() == []

    def test_read_limited_on_the_public_api_is_contradictory(self):
        settings = Settings.from_env(
            {
                "ORCID_SCOPE": "/read-limited",
                "SECRET_KEY": "x" * 32,
                "ORCID_CLIENT_ID": "APP-ABCDEFGHIJKLMNOP",
                "ORCID_CLIENT_SECRET": "x",
            }
        )
        assert any("ORCID_SCOPE" in p for p in settings.service_problems())

    @pytest.mark.parametrize(
        "public_url, secure",
        [
            (None, True),
            ("https://data.example.org", True),
            ("http://127.0.0.1:8000", False),
            ("http://localhost:8000", False),
            ("http://data.example.org", True),
        ],
    )
    def test_cookies_are_secure_except_plain_http_on_loopback(self, public_url, secure):
        environ = {"PUBLIC_URL": public_url} if public_url else {}
        assert Settings.from_env(environ).secure_cookies is secure

    def test_forwarded_allow_ips_takes_addresses_networks_and_a_star(self):
        settings = Settings.from_env({"FORWARDED_ALLOW_IPS": "10.0.0.0/8, 192.0.2.7, ::1, *"})
        assert settings.forwarded_allow_ips == ("10.0.0.0/8", "192.0.2.7", "::1", "*")
        assert Settings.from_env({}).forwarded_allow_ips == ("127.0.0.1", "::1")

    def test_a_forwarded_allow_ips_entry_that_is_no_address_is_named(self):
        with pytest.raises(ConfigError, match=r"FORWARDED_ALLOW_IPS: 'proxy\.local' is not"):
            Settings.from_env({"FORWARDED_ALLOW_IPS": "127.0.0.1,proxy.local"})

    def test_allowed_redirect_hosts_are_a_lowercase_list(self):
        settings = Settings.from_env(
            {"ALLOWED_REDIRECT_HOSTS": "Data.Example.org, files.example.org"}
        )
        assert settings.allowed_redirect_hosts == ("data.example.org", "files.example.org")


class TestMaxItems:
    def test_the_item_cap_defaults_to_50_and_is_read_from_the_environment(self):
        assert Settings.from_env({}).orcid_max_items == 50
        assert Settings.from_env({"ORCID_MAX_ITEMS": "20"}).orcid_max_items == 20

    @pytest.mark.parametrize("raw", ["0", "1001", "-5", "many"])
    def test_an_item_cap_out_of_range_names_the_variable(self, raw):
        with pytest.raises(ConfigError, match="ORCID_MAX_ITEMS"):
            Settings.from_env({"ORCID_MAX_ITEMS": raw})


class TestAcceptedForms:
    @pytest.mark.parametrize("raw", ["yes", "YES", "on", "1", "true"])
    def test_yes_like_booleans_are_true(self, raw):
        assert Settings.from_env({"AUTH_REDIRECT": raw}).auth_redirect is True

    @pytest.mark.parametrize(
        "url", ["redis://127.0.0.1:6379/0", "rediss://cache.example:6380", "unix:///run/r.sock"]
    )
    def test_redis_urls_with_a_scheme_are_accepted(self, url):
        assert Settings.from_env({"REDIS_URL": url}).redis_url == url

    def test_a_legacy_client_id_is_accepted(self):
        env = {"ORCID_CLIENT_ID": "0000-0002-1694-233X", "ORCID_CLIENT_SECRET": "s"}
        assert Settings.from_env(env).orcid_client_id == "0000-0002-1694-233X"

    def test_every_problem_is_one_line_naming_its_variable(self):
        with pytest.raises(ConfigError) as raised:
            Settings.from_env(
                {"ORCID_SCOPE": "/x", "REDIS_URL": "localhost", "ORCID_TIMEOUT": "soon"}
            )
        parts = raised.value.message.split("; ")
        assert [p.split(":")[0] for p in parts] == ["ORCID_TIMEOUT", "ORCID_SCOPE", "REDIS_URL"]
        assert "\n" not in raised.value.message


SERVICE = {"SECRET_KEY": "a-secret-of-sixteen-or-more", "ORCID_CLIENT_ID": "APP-ABCDEFGHIJKLMNOP"}


class TestPublicUrl:
    @pytest.mark.parametrize(
        "public_url",
        [
            "https://data.example.org",
            "http://127.0.0.1:8000",
            "http://localhost:8000",
            "http://[::1]:8000",
        ],
    )
    def test_https_or_plain_http_on_loopback_is_accepted(self, public_url):
        settings = Settings.from_env(
            {**SERVICE, "ORCID_CLIENT_SECRET": "s", "PUBLIC_URL": public_url}
        )
        assert settings.service_problems() == []

    def test_plain_http_elsewhere_is_one_line_naming_the_variable(self):
        env = {**SERVICE, "ORCID_CLIENT_SECRET": "s", "PUBLIC_URL": "http://data.example.org"}
        problems = Settings.from_env(env).service_problems()
        assert problems == [
            "PUBLIC_URL: 'http://data.example.org' must be https (ORCID requires HTTPS "
            "redirect URIs); plain http only on loopback or with GATEKEEPER_DEMO=1"
        ]

    @pytest.mark.parametrize("demo", ["0", "1"])
    def test_orcid_over_plain_http_is_refused_but_on_loopback(self, demo):
        env = {
            **SERVICE,
            "ORCID_CLIENT_SECRET": "s",
            "ORCID_BASE_URL": "http://orcid.org",
            "ORCID_API_URL": "http://pub.orcid.org/v3.0",
            "GATEKEEPER_DEMO": demo,
        }
        problems = Settings.from_env(env).service_problems()
        assert [p.split(":")[0] for p in problems] == ["ORCID_BASE_URL", "ORCID_API_URL"]
        assert "must be https" in problems[0]
        emulator = {"ORCID_BASE_URL": "http://127.0.0.1:9", "ORCID_API_URL": "http://[::1]:9/v3.0"}
        assert Settings.from_env({**env, **emulator}).service_problems() == []

    def test_the_demo_may_use_plain_http_anywhere(self):
        env = {
            **SERVICE,
            "ORCID_CLIENT_SECRET": "s",
            "PUBLIC_URL": "http://demo.example.org",
            "GATEKEEPER_DEMO": "1",
        }
        assert Settings.from_env(env).service_problems() == []
