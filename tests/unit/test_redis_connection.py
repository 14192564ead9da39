"""REDIS_URL's forms: what each names, what is refused and why, and no password shown."""

import pytest
from redis.backoff import NoBackoff
from redis.retry import Retry

from app import settings
from app.redis_connection import (
    SCHEMES,
    LazyCluster,
    RedisUrlError,
    connect,
    parse_redis_url,
    redact,
    url_problem,
)

SECRET = "s3cr3t-p4ss"


class TestParse:
    def test_a_sentinel_url_names_its_sentinels_service_and_database(self):
        target = parse_redis_url(
            f"redis+sentinel://:{SECRET}@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/2"
            "?sentinel_password=other"
        )
        assert target.kind == "sentinel"
        assert target.hosts == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
        assert (target.service, target.db) == ("mymaster", 2)
        assert (target.password, target.sentinel_password) == (SECRET, "other")
        assert target.wait_replicas == 1  # a session outlives a failover by default

    def test_a_cluster_url_names_its_startup_nodes(self):
        target = parse_redis_url("redis+cluster://user:pw@h1:7000,h2:7001")
        assert target.kind == "cluster"
        assert target.hosts == (("h1", 7000), ("h2", 7001))
        assert (target.username, target.password, target.wait_replicas) == ("user", "pw", 0)

    @pytest.mark.parametrize(
        "url", ["redis://127.0.0.1:6379/0", "rediss://cache.example:6380", "unix:///run/r.sock"]
    )
    def test_a_single_server_url_goes_to_redis_py_as_written(self, url):
        target = parse_redis_url(url)
        assert (target.kind, target.url) == ("server", url)

    def test_our_option_is_taken_out_of_a_server_url_and_redis_pys_are_left(self):
        target = parse_redis_url("redis://h:6379/0?wait_replicas=1&health_check_interval=5")
        assert target.url == "redis://h:6379/0?health_check_interval=5"
        assert target.wait_replicas == 1

    def test_a_password_with_an_at_sign_is_read_to_the_last_one(self):
        assert parse_redis_url("redis+cluster://:p%40ss@w@h:7000").password == "p@ss@w"


class TestProblems:
    @pytest.mark.parametrize(
        "url, expected",
        [
            ("localhost", "needs a scheme"),
            ("http://h:6379", "needs a scheme"),
            ("redis+sentinel://h1:26379,h2:26379", "names no service"),
            ("redis+sentinel://h1:26379/", "names no service"),
            ("redis+sentinel:///mymaster", "names no host"),
            ("redis+sentinel://h1:port/mymaster", "no valid port"),
            ("redis+sentinel://h1:0/mymaster", "no valid port"),
            ("redis+sentinel://h1/mymaster/two", "/SERVICE/DB"),
            ("redis+sentinel://h1/mymaster?sentinel_pasword=x", "unknown option"),
            ("redis+cluster://", "names no host"),
            ("redis+cluster://h1:70000", "no valid port"),
            ("redis+cluster://h1:7000/1", "database 0 only"),
            ("redis+cluster://h1:7000?sentinel_password=x", "no sentinels"),
            ("redis+cluster://h1:7000?wait_replicas=1", "one server or Sentinel"),
            ("redis+sentinel://h1/m?wait_replicas=many", "wait_replicas"),
            ("redis://:6379/0", "names no host"),
        ],
    )
    def test_a_malformed_url_is_a_problem_that_says_why(self, url, expected):
        problem = url_problem(url)
        assert problem is not None and expected in problem

    def test_settings_report_the_problem_under_redis_url(self):
        from app.errors import ConfigError

        with pytest.raises(ConfigError) as raised:
            settings.Settings.from_env({"REDIS_URL": f"redis+sentinel://:{SECRET}@h1,h2"})
        assert str(raised.value).startswith("REDIS_URL: ")
        assert "names no service" in str(raised.value)
        assert SECRET not in str(raised.value)

    @pytest.mark.parametrize(
        "url",
        [
            f"redis+sentinel://:{SECRET}@h1,h2",
            f"redis+sentinel://user:{SECRET}@h1/m?sentinel_password={SECRET}&bogus=1",
            f"redis+cluster://u:{SECRET}@h:99999",
            f"redis+cluster://:{SECRET}@",
            f"redis://:{SECRET}@:6379/0",
        ],
    )
    def test_no_problem_shows_a_password(self, url):
        problem = url_problem(url)
        assert problem is not None and SECRET not in problem and "***" in problem

    @pytest.mark.parametrize("char", ["/", "?", "#"])
    @pytest.mark.parametrize("form", ["redis://:{p}@10.0.0.5:6379/0", "redis+sentinel://:{p}@h1/m"])
    def test_a_password_with_an_unencoded_delimiter_is_never_shown(self, char, form):
        # The delimiter ends the user part inside the password: its parts read as a host.
        password = f"se{char}{SECRET}"
        problem = url_problem(form.format(p=password))
        assert problem is not None and "%2F" in problem
        assert SECRET not in problem and "se" + char not in problem

    @pytest.mark.parametrize(
        "option", ["socket_timeout=30", "socket_connect_timeout=9", "retry_on_timeout=true"]
    )
    def test_options_that_would_undo_the_services_timeouts_are_refused(self, option):
        problem = url_problem(f"redis://h:6379/0?{option}")
        assert problem is not None and "the service's to set" in problem

    def test_settings_know_every_scheme(self):
        assert settings.REDIS_SCHEMES == SCHEMES


class TestRedact:
    @pytest.mark.parametrize(
        "url, shown",
        [
            ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
            ("redis://user:pw@h/0", "redis://user:***@h/0"),
            ("redis://h:6379/0", "redis://h:6379/0"),
            (
                "redis+sentinel://:a@b@h1,h2/m?sentinel_password=x&wait_replicas=1",
                "redis+sentinel://:***@h1,h2/m?sentinel_password=***&wait_replicas=1",
            ),
        ],
    )
    def test_passwords_become_stars(self, url, shown):
        assert redact(url) == shown

    def test_a_target_never_prints_its_password(self):
        assert SECRET not in repr(parse_redis_url(f"redis+cluster://:{SECRET}@h:7000"))


class TestConnect:
    """Clients are made without a connection: nothing here opens a socket."""

    RETRY = Retry(NoBackoff(), 1)

    def test_sentinel_gives_redis_pys_master_client_with_our_timeouts(self):
        from redis.sentinel import SentinelConnectionPool

        client = connect(
            f"redis+sentinel://:{SECRET}@127.0.0.1:1,127.0.0.1:2/mymaster/3?sentinel_password=sp",
            socket_timeout=0.2,
            connect_timeout=0.1,
            retry=self.RETRY,
        )
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert pool.service_name == "mymaster"
        kwargs = pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.2, 0.1)
        assert (kwargs["db"], kwargs["password"]) == (3, SECRET)
        sentinels = pool.sentinel_manager.sentinels
        assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
        assert {s.connection_pool.connection_kwargs["password"] for s in sentinels} == {"sp"}
        assert {s.connection_pool.connection_kwargs["socket_timeout"] for s in sentinels} == {0.2}

    def test_cluster_is_made_on_first_use(self):
        client = connect(
            f"redis+cluster://:{SECRET}@127.0.0.1:7000,127.0.0.1:7001",
            socket_timeout=0.2,
            connect_timeout=0.1,
            retry=self.RETRY,
        )
        assert isinstance(client, LazyCluster)
        assert client._client is None  # redis-py's RedisCluster reads the slot map when made
        assert SECRET not in repr(client)

    def test_a_url_that_does_not_parse_is_refused(self):
        with pytest.raises(RedisUrlError):
            connect("redis+cluster://", socket_timeout=1, connect_timeout=1, retry=self.RETRY)
