"""Real Redis topologies on loopback ports: a primary with a replica and three sentinels,
and a three-primary cluster, from Debian's ``redis-server`` and ``redis-sentinel``.

Each node runs in its own temporary directory; ``stop()`` kills every process it
started. Timings are short (a primary is "down" after 1 s) so that a failover fits in a
test; a deployment keeps Sentinel's defaults or its own (docs/redis.md).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.integration.conftest import free_port, stop, wait_until

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000
CLUSTER_NODE_TIMEOUT_MS = 2000


def _binary(name: str) -> str:
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
    )
    if found is None:
        raise RuntimeError(f"{name} is not installed: run `make test`, which installs it")
    return found


class Node:
    """One redis-server on 127.0.0.1, started with ``args``; killed by ``stop()``."""

    def __init__(self, tmp: Path, *args: str, port: int | None = None):
        self.port = port or free_port()
        self.dir = tmp / f"node-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.client = redis.Redis(
            port=self.port, decode_responses=True, socket_timeout=2, socket_connect_timeout=1
        )
        self.process: subprocess.Popen | None = None
        self._log = None
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self):
        if self._log is not None:
            self._log.close()
        self._log = open(self.dir / "redis.log", "a")
        self.process = subprocess.Popen(
            [
                _binary("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "no",
                *self.args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self.client.ping, timeout=10, what=f"redis-server on {self.port}")

    def kill(self):
        """SIGKILL: no shutdown, no last write to the replicas."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=5)

    def stop(self):
        if self.process is not None:
            stop(self.process, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
        self.client.close()


class Sentinels:
    """A primary, one replica and three sentinels watching them as ``SERVICE``."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.nodes: list[Node] = []
        self.sentinels: list[subprocess.Popen] = []
        self.sentinel_ports: list[int] = []
        try:
            self.primary = self._node(
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"
            )
            self.replica = self._node(
                "--replicaof", "127.0.0.1", str(self.primary.port), "--repl-diskless-load", "swapdb"
            )
            wait_until(
                lambda: (
                    self.primary.client.info("replication")["connected_slaves"] == 1
                    and self.replica.client.info("replication")["master_link_status"] == "up"
                ),
                timeout=10,
                what="the replica's sync",
            )
            for _ in range(3):
                self._sentinel()
            wait_until(
                self._sentinels_agree, timeout=15, what="three sentinels that know the replica"
            )
        except BaseException:
            self.stop()
            raise

    def _node(self, *args: str) -> Node:
        node = Node(self.tmp, *args)
        self.nodes.append(node)
        return node

    def _sentinel(self):
        port = free_port()
        folder = self.tmp / f"sentinel-{port}"
        folder.mkdir()
        conf = folder / "sentinel.conf"  # sentinels rewrite their config: one each
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        with open(folder / "sentinel.log", "w") as log:  # the child keeps its own copy
            self.sentinels.append(
                subprocess.Popen(
                    [_binary("redis-sentinel"), str(conf)], stdout=log, stderr=subprocess.STDOUT
                )
            )
        self.sentinel_ports.append(port)

    def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            client = redis.Redis(port=port, decode_responses=True, socket_timeout=1)
            try:
                master = client.sentinel_master(SERVICE)
                if master["num-other-sentinels"] != 2 or master["num-slaves"] != 1:
                    return False
            finally:
                client.close()
        return True

    def url(self, **options) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"redis+sentinel://{hosts}/{SERVICE}/0" + (f"?{query}" if query else "")

    def primary_port(self) -> int:
        """The primary's port as the first sentinel that answers reports it."""
        for port in self.sentinel_ports:
            client = redis.Redis(port=port, decode_responses=True, socket_timeout=1)
            try:
                return int(client.sentinel_get_master_addr_by_name(SERVICE)[1])
            except redis.RedisError:
                continue
            finally:
                client.close()
        raise RuntimeError("no sentinel answered")

    def node_on(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def stop(self):
        for process in self.sentinels:
            stop(process, signal.SIGKILL)
        for node in self.nodes:
            node.stop()


class Cluster:
    """Three primaries sharing the 16384 slots, made with ``redis-cli --cluster create``."""

    def __init__(self, tmp: Path, size: int = 3):
        self.nodes: list[Node] = []
        try:
            for _ in range(size):
                self.nodes.append(
                    Node(
                        tmp,
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        str(CLUSTER_NODE_TIMEOUT_MS),
                        # NOTE: the bus port is the port + 10000 unless set: that one may
                        # be taken, or past 65535.
                        "--cluster-port",
                        str(free_port()),
                    )
                )
            if size == 1:  # redis-cli creates three primaries at least
                self.nodes[0].client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            else:
                self._create()
            wait_until(self._ok, timeout=15, what="cluster_state:ok on every node")
        except BaseException:
            self.stop()
            raise

    def _create(self):
        subprocess.run(
            [
                _binary("redis-cli"),
                "--cluster",
                "create",
                *(node.address for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def _ok(self) -> bool:
        return all(
            node.client.cluster("info")["cluster_state"] == "ok"
            and len(node.client.cluster("nodes")) == len(self.nodes)
            for node in self.nodes
        )

    def url(self) -> str:
        return "redis+cluster://" + ",".join(node.address for node in self.nodes)

    def owner(self, slot: int) -> Node:
        """The node serving ``slot``, as the first node's slot map says."""
        for start, end, primary, *_ in self.nodes[0].client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(node for node in self.nodes if node.port == int(primary[1]))
        raise RuntimeError(f"slot {slot} is served by no node")

    def move_slot(self, slot: int, to: Node, pause: float = 0.0) -> int:
        """Move ``slot`` to ``to`` as ``redis-cli --cluster reshard`` does, one key per
        MIGRATE with ``pause`` between keys (so the slot stays split a while); the keys
        moved."""
        source = self.owner(slot)
        if source is to:
            return 0
        source_id, target_id = source.client.cluster("myid"), to.client.cluster("myid")
        to.client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        while keys := source.client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1):
            source.client.execute_command(
                "MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys
            )
            moved += len(keys)
            time.sleep(pause)
        for node in (to, source, *[n for n in self.nodes if n not in (to, source)]):
            node.client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        wait_until(lambda: self.owner(slot) is to, timeout=10, what=f"slot {slot} moved")
        return moved

    def flush(self):
        for node in self.nodes:
            node.client.flushall()

    def stop(self):
        for node in self.nodes:
            node.stop()


# --- load, as a proxy sends it ------------------------------------------------------------

FILE = {"X-Original-URI": "/datasets/sail-cohort/data.csv"}
# What each kind of cookie may be answered. A signed-in researcher may get 401 while Redis
# cannot say (sessions fail closed), never a 200 they are not owed, nor a 5xx or a hang.
EXPECTED = {"qualified": {200, 401}, "unqualified": {403, 401}, "signed-out": {401}}


class Load:
    """Client threads sending /auth with each cookie in turn; every answer is kept as
    (started, seconds, kind, status), status 0 for no answer within ``timeout``."""

    def __init__(self, url: str, cookies: dict[str, dict], threads: int = 4, timeout=5.0):
        import threading

        self.url, self.cookies, self.timeout = url, cookies, timeout
        self.samples: list[tuple[float, float, str, int]] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        import requests

        sessions = {}
        for kind, jar in self.cookies.items():
            sessions[kind] = requests.Session()
            sessions[kind].cookies.update(jar)
        while not self.stopping.is_set():
            for kind, session in sessions.items():
                started = time.monotonic()
                try:
                    status = session.get(
                        f"{self.url}/auth",
                        headers=FILE,
                        allow_redirects=False,
                        timeout=self.timeout,
                    ).status_code
                except requests.RequestException:
                    status = 0
                self.samples.append((started, time.monotonic() - started, kind, status))
            time.sleep(0.01)

    def wrong(self) -> list:
        return [s for s in self.samples if s[3] not in EXPECTED[s[2]]]

    def recovered_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the qualified researcher's first 200 after which
        every one of theirs is 200; None if that never came."""
        qualified = [s for s in self.samples if s[2] == "qualified" and s[0] >= moment]
        for index, sample in enumerate(qualified):
            if all(s[3] == 200 for s in qualified[index:]):
                return sample[0] - moment
        return None

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=self.timeout + 5)
