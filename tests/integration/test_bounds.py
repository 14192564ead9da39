"""Bounds that hold for every request, on real servers: redis-server, the emulator, gunicorn.

Behaviour only: what a stopped, hung or emptied Redis, a killed lock holder or a slow
ORCID may and may not change in the answers. How fast they come is bench/faults.py's.
"""

import re
import time

import pytest
import requests

from app.cache import RedisStore
from tests.integration.conftest import sign_in

QUALIFIED = "qualified"
FILE = {"X-Original-URI": "/datasets/sail-cohort/data.csv"}


@pytest.fixture
def gatekeeper(start_gatekeeper, redis_url, orcid):
    return start_gatekeeper(redis_url=redis_url, workers=2)


def fresh_auth(gatekeeper, cookies, times=1) -> list[int]:
    """``/auth`` on a new connection each time, so that every worker gets some."""
    statuses = []
    for _ in range(times):
        response = requests.get(
            f"{gatekeeper.url}/auth",
            headers={**FILE, "Connection": "close"},
            cookies=cookies,
            allow_redirects=False,
            timeout=15,
        )
        statuses.append(response.status_code)
    return statuses


def log_out(browser, gatekeeper):
    page = browser.get(f"{gatekeeper.url}/logout", timeout=5).text
    token = re.search(r'name="csrf" value="([^"]+)"', page)[1]
    response = browser.post(f"{gatekeeper.url}/logout", data={"csrf": token}, timeout=15)
    assert response.status_code == 200


class TestSessionsWhileRedisIsDown:
    """A sighting counts at most SESSION_GRACE (a second) past Redis's last word on it."""

    def test_a_logout_elsewhere_is_honoured_once_redis_stops(self, redis_server, redis_url):
        worker_a, worker_b = RedisStore.from_url(redis_url), RedisStore.from_url(redis_url)
        worker_a.put_session("s1", '{"orcid": "0000-0002-1825-0097"}', 60)
        assert worker_b.get_session("s1") is not None  # B has seen it
        assert worker_a.delete_session("s1") is True  # the logout, handled by A
        redis_server.stop()
        time.sleep(1.1)
        assert worker_b.get_session("s1") is None
        assert worker_b.lookup("s1", "v", "0000-0002-1825-0097", "d")[0] is None

    def test_a_logged_out_cookie_is_refused_by_every_worker_while_redis_is_down(
        self, gatekeeper, redis_server
    ):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        cookies = dict(browser.cookies)
        assert fresh_auth(gatekeeper, cookies, 20) == [200] * 20  # both workers saw it
        log_out(browser, gatekeeper)
        redis_server.stop()
        time.sleep(1.1)
        assert fresh_auth(gatekeeper, cookies, 20) == [401] * 20

    def test_a_session_redis_lost_in_a_restart_is_refused(self, gatekeeper, redis_server):
        browser, _ = sign_in(gatekeeper.url, QUALIFIED)
        cookies = dict(browser.cookies)
        assert fresh_auth(gatekeeper, cookies, 10) == [200] * 10
        redis_server.stop()
        fresh_auth(gatekeeper, cookies, 10)  # every worker meets the outage
        redis_server.start()  # empty: --save "" and no AOF
        time.sleep(1.1)
        assert fresh_auth(gatekeeper, cookies, 20) == [401] * 20

    def test_a_decision_kept_during_one_outage_is_not_served_in_the_next(
        self, redis_server, redis_url
    ):
        store = RedisStore.from_url(redis_url)
        redis_server.stop()
        store.put_decision("v", "o", "d", "allow", 600)  # kept in this process only
        redis_server.start()
        store._down_until = 0  # let the breaker close now
        assert store.get_decision("v", "o", "d") is None  # Redis never had it
        redis_server.stop()
        assert store.get_decision("v", "o", "d") is None
