"""The gatekeeper on real Redis topologies: Sentinel (a primary, a replica, three
sentinels) and Cluster (three primaries), with a primary killed and a slot moved under
load, as a proxy sees it.

Each fault test prints what it measured (run with ``-s`` to see it); docs/redis.md
quotes the figures.
"""

from __future__ import annotations

import re
import signal
import time

import pytest
import redis
import requests
from click.testing import CliRunner
from redis.crc import key_slot

from app.cache import (
    NotReplicated,
    RedisStore,
    session_index_key,
    session_key,
    session_record,
    token_key,
)
from app.cli import main
from tests.integration.conftest import free_port, sign_in, wait_until
from tests.integration.redis_topologies import FILE, Cluster, Load, Sentinels

JOSIAH = "0000-0002-1825-0097"


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory):
    """Shared by the tests that kill nothing."""
    topology = Sentinels(tmp_path_factory.mktemp("sentinels"))
    yield topology
    topology.stop()


@pytest.fixture
def own_sentinels(tmp_path_factory):
    """A topology of one's own, for a test that kills its primary."""
    topology = Sentinels(tmp_path_factory.mktemp("sentinels-killed"))
    yield topology
    topology.stop()


@pytest.fixture(scope="module")
def cluster_topology(tmp_path_factory):
    topology = Cluster(tmp_path_factory.mktemp("cluster"))
    yield topology
    topology.stop()


@pytest.fixture
def cluster(cluster_topology):
    """The shared cluster, emptied for each test."""
    cluster_topology.flush()
    return cluster_topology


def persona_orcid(orcid, key: str) -> str:
    personas = requests.get(f"{orcid.url}/_emulator/personas", timeout=5).json()
    return next(p["orcid"] for p in personas if p["key"] == key)


def researchers(url: str) -> dict[str, dict]:
    """Cookies of a qualified researcher, a refused one and a signed-out one."""
    qualified = dict(sign_in(url, "qualified")[0].cookies)
    unqualified = dict(sign_in(url, "self-asserted")[0].cookies)
    browser, _ = sign_in(url, "qualified")
    signed_out = dict(browser.cookies)
    page = browser.get(f"{url}/logout", timeout=5).text
    token = re.search(r'name="csrf" value="([^"]+)"', page)[1]
    browser.post(f"{url}/logout", data={"csrf": token}, timeout=10).raise_for_status()
    return {"qualified": qualified, "unqualified": unqualified, "signed-out": signed_out}


def statuses(url: str, cookies: dict[str, dict]) -> dict[str, int]:
    return {
        kind: requests.get(
            f"{url}/auth", headers=FILE, cookies=jar, allow_redirects=False, timeout=5
        ).status_code
        for kind, jar in cookies.items()
    }


BEFORE = {"qualified": 200, "unqualified": 403, "signed-out": 401}


def summary(load: Load, since: float) -> str:
    window = sorted(s[1] for s in load.samples if s[0] >= since)
    p99 = window[max(0, int(len(window) * 0.99) - 1)]
    return f"{len(window)} answers, slowest {window[-1] * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"


class TestSentinel:
    def test_the_store_reaches_the_primary_through_the_sentinels(self, sentinels):
        store = RedisStore.from_url(sentinels.url())
        assert store.put_session("s1", session_record(JOSIAH, "t"), 60)
        assert store.get_session("s1", JOSIAH) == session_record(JOSIAH, "t")
        store.put_decision("v", JOSIAH, "d", "allow", 60)
        assert store.lookup("s1", "v", JOSIAH, "d") == (session_record(JOSIAH, "t"), "allow")
        assert store.forget_orcid(JOSIAH) == 1
        assert store.take_sessions_of(JOSIAH) == [session_record(JOSIAH, "t")]
        assert store.unready() is None  # /readyz: the primary takes a write

    def test_a_new_session_waits_for_the_replica(self, sentinels):
        store = RedisStore.from_url(sentinels.url())
        waits = _calls(sentinels.primary, "wait")
        assert store.put_session("s2", session_record(JOSIAH, None), 60)
        assert _calls(sentinels.primary, "wait") == waits + 1
        # On the replica as soon as sign-in completes: a failover now keeps it.
        assert sentinels.replica.client.get(session_key(JOSIAH, "s2")) is not None
        assert sentinels.replica.client.sismember(session_index_key(JOSIAH), "s2")

    def test_an_ending_no_replica_confirmed_is_not_reported_done(self, sentinels):
        # A sign-out or revocation on the primary alone comes back after a failover: it
        # is reported unconfirmed (503 on the page, exit 1), as when Redis is down.
        store = RedisStore.from_url(sentinels.url())
        assert store.put_session("s3", session_record(JOSIAH, None), 60)
        assert store.put_session("s5", session_record(JOSIAH, "orcid-token"), 60)
        assert store.put_token("d3", JOSIAH, "record-3", 60)
        waits = _calls(sentinels.primary, "wait")
        sentinels.replica.process.send_signal(signal.SIGSTOP)
        try:
            assert store.delete_session("s3", JOSIAH) is False
            # Taken from the primary: the records come with the error, for Disconnect.
            with pytest.raises(NotReplicated) as raised:
                store.take_sessions_of(JOSIAH)
            assert session_record(JOSIAH, "orcid-token") in raised.value.taken
            assert store.take_tokens_of(JOSIAH) is None
            with pytest.raises(NotReplicated):
                store.forget_orcid(JOSIAH)
            assert store.forget_decisions(JOSIAH) is False
        finally:
            sentinels.replica.process.send_signal(signal.SIGCONT)
        assert _calls(sentinels.primary, "wait") >= waits + 5  # token revocation waits too
        # This process holds them ended meanwhile; a retry confirms once a replica answers.
        assert store.get_session("s3", JOSIAH) is None and store.get_session("s5", JOSIAH) is None
        wait_until(lambda: store.forget_decisions(JOSIAH), timeout=10, what="a replica's WAIT")
        assert store.take_tokens_of(JOSIAH) == 0

    def test_a_primary_that_hung_through_a_failover_is_left_within_a_second_or_two(
        self, own_sentinels
    ):
        # A worker idle through the failover kept its connections to the old primary,
        # which answered again as one when it woke: a sign-out made on the new primary
        # did not count there for ten seconds.
        idle = RedisStore.from_url(own_sentinels.url())
        assert idle.put_session("s4", session_record(JOSIAH, None), 3600)
        assert idle.get_session("s4", JOSIAH) is not None
        old = own_sentinels.primary_port()
        hung = own_sentinels.node_on(old).process
        hung.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: own_sentinels.primary_port() != old, timeout=30, what="a promotion")
            # Another worker, on the new primary (whose replica is the hung one: no WAIT),
            # once every sentinel will name it (each store new: no breaker left open).
            url = own_sentinels.url(wait_replicas=0)
            wait_until(
                lambda: RedisStore.from_url(url).take_sessions_of(JOSIAH) is not None,
                timeout=30,
                what="the sign-out on the new primary",
            )
        finally:
            hung.send_signal(signal.SIGCONT)
        woke = time.monotonic()
        wait_until(lambda: idle.get_session("s4", JOSIAH) is None, timeout=10, what="the sign-out")
        assert time.monotonic() - woke < 4.0  # PRIMARY_CHECK and the check: not ten seconds

    def test_a_killed_primary_is_replaced_and_nobody_is_signed_out_or_let_in(
        self, own_sentinels, start_gatekeeper, orcid
    ):
        gatekeeper = start_gatekeeper(redis_url=own_sentinels.url())
        cookies = researchers(gatekeeper.url)
        assert statuses(gatekeeper.url, cookies) == BEFORE
        old = own_sentinels.primary_port()
        with Load(gatekeeper.url, cookies) as load:
            time.sleep(1)
            killed = time.monotonic()
            own_sentinels.node_on(old).kill()
            wait_until(
                lambda: own_sentinels.primary_port() != old, timeout=20, what="a promoted replica"
            )
            promoted = time.monotonic()
            wait_until(
                lambda: (
                    (r := load.recovered_after(killed)) is not None
                    and time.monotonic() - killed - r > 1.5
                ),
                timeout=20,
                what="/auth answering 200 again for 1.5 s",
            )
        recovered = load.recovered_after(killed)
        print(
            f"\nsentinel primary kill: promoted after {promoted - killed:.2f} s, "
            f"/auth 200 again after {recovered:.2f} s; {summary(load, killed)}"
        )
        assert load.wrong() == []  # no 200 owed to nobody, no 5xx, no answer past 5 s
        assert statuses(gatekeeper.url, cookies) == BEFORE  # nobody signed out, or back in


class TestCluster:
    def test_a_researchers_keys_share_one_slot_and_every_store_call_works(self, cluster):
        store = RedisStore.from_url(cluster.url())
        assert store.put_session("s1", session_record(JOSIAH, "t"), 60)
        store.put_decision("v", JOSIAH, "d", "allow", 60)
        # MGET of the session and the decision: CROSSSLOT unless they share a slot.
        assert store.lookup("s1", "v", JOSIAH, "d") == (session_record(JOSIAH, "t"), "allow")
        node = cluster.owner(key_slot(session_key(JOSIAH, "s1").encode()))
        assert sorted(node.client.keys(f"gk:{{{JOSIAH}}}:*")) == [
            f"gk:{{{JOSIAH}}}:d:v:d",
            f"gk:{{{JOSIAH}}}:di",
            f"gk:{{{JOSIAH}}}:s:s1",
            f"gk:{{{JOSIAH}}}:si",
        ]
        scans = sum(_calls(n, "scan") for n in cluster.nodes)
        assert store.forget_orcid(JOSIAH) == 1
        assert sum(_calls(n, "scan") for n in cluster.nodes) == scans  # no node scanned
        assert store.take_sessions_of(JOSIAH) == [session_record(JOSIAH, "t")]
        assert [store.hit("r", 60) for _ in range(2)] == [1, 2]
        lock = store.lock("v:x:d", 5)
        assert lock.acquire() and not store.lock("v:x:d", 5).acquire()
        lock.release()
        assert store.unready() is None  # /readyz: the cluster takes a write

    def test_tokens_span_slots_and_every_token_call_works(self, cluster):
        store = RedisStore.from_url(cluster.url())
        digests = [f"digest-{n}" for n in range(6)]  # records in several slots
        assert len({key_slot(token_key(d).encode()) for d in digests}) > 1
        for digest in digests:
            assert store.put_token(digest, JOSIAH, f"record-{digest}", 60)
        store.put_decision("v", JOSIAH, "d", "allow", 60)
        assert store.token_lookup(digests[0], "v", JOSIAH, "d") == (f"record-{digests[0]}", "allow")
        assert [d for d, _, _ in store.tokens_of(JOSIAH)] == sorted(digests)
        assert store.delete_tokens(JOSIAH, digests[:2]) == 2
        assert store.take_tokens_of(JOSIAH) == 4
        assert store.tokens_of(JOSIAH) == [] and store.get_token(digests[-1]) is None

    def test_a_slot_moved_under_load_loses_no_session_and_lets_nobody_in(
        self, cluster, start_gatekeeper, orcid
    ):
        gatekeeper = start_gatekeeper(redis_url=cluster.url())
        cookies = researchers(gatekeeper.url)
        assert statuses(gatekeeper.url, cookies) == BEFORE
        slot = key_slot(session_index_key(persona_orcid(orcid, "qualified")).encode())
        source = cluster.owner(slot)
        target = next(node for node in cluster.nodes if node is not source)
        with Load(gatekeeper.url, cookies) as load:
            time.sleep(1)
            started = time.monotonic()
            moved = cluster.move_slot(slot, target, pause=0.2)  # a split slot for a while
            finished = time.monotonic()
            time.sleep(1.5)
        print(
            f"\ncluster slot move: {moved} keys in {finished - started:.2f} s; "
            f"{summary(load, started)}"
        )
        assert moved >= 4  # two sessions' index, a session, a decision and its index
        assert cluster.owner(slot) is target
        assert load.wrong() == []
        during = {s[3] for s in load.samples if s[2] == "qualified" and s[0] >= started}
        assert during == {200}  # not even a moment signed out: redis-py follows ASK/MOVED
        assert statuses(gatekeeper.url, cookies) == BEFORE

    def test_the_revoke_commands_work_on_a_cluster_url(self, cluster, start_gatekeeper, orcid):
        gatekeeper = start_gatekeeper(redis_url=cluster.url())
        browser, _ = sign_in(gatekeeper.url, "qualified")
        check = {"headers": FILE, "allow_redirects": False, "timeout": 5}
        assert browser.get(f"{gatekeeper.url}/auth", **check).status_code == 200
        orcid_id = persona_orcid(orcid, "qualified")
        env = {"REDIS_URL": cluster.url()}
        result = CliRunner().invoke(main, ["decisions", "revoke", "--orcid", orcid_id], env=env)
        assert result.exit_code == 0, result.output
        assert f"revoked 1 cached decision for {orcid_id}" in result.output
        result = CliRunner().invoke(main, ["sessions", "revoke", "--orcid", orcid_id], env=env)
        assert result.exit_code == 0, result.output
        assert f"ended 1 session of {orcid_id}" in result.output
        time.sleep(1.1)  # each worker re-checks a remembered answer after a second
        assert browser.get(f"{gatekeeper.url}/auth", **check).status_code == 401

    def test_a_cluster_that_does_not_answer_is_redis_down_not_an_error(self, tmp_path):
        unreachable = RedisStore.from_url(f"redis+cluster://127.0.0.1:{free_port()}")
        assert unreachable.lookup("s", "v", JOSIAH, "d") == (None, None)
        assert unreachable.ping() is False
        assert unreachable.unready() == "Redis does not answer"
        with pytest.raises(redis.ConnectionError):
            unreachable.forget_orcid(JOSIAH)
        # A cluster that answered once and then lost every node: redis-py raises its
        # RedisClusterException, which reaches callers as a RedisError.
        gone = Cluster(tmp_path, size=1)
        try:
            store = RedisStore.from_url(gone.url())
            assert store.put_session("s1", session_record(JOSIAH, None), 60)
            gone.nodes[0].kill()
            assert store.lookup("s1", "v", JOSIAH, "d")[1] is None
            with pytest.raises(redis.RedisError):
                store.redis.get("gk:x")  # as the decision log and write tokens call it
        finally:
            gone.stop()
        result = CliRunner().invoke(
            main, ["sessions", "revoke", "--orcid", JOSIAH], env={"REDIS_URL": gone.url()}
        )
        assert result.exit_code == 1 and "Redis did not answer" in result.output


def _calls(node, command: str) -> int:
    return node.client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)
