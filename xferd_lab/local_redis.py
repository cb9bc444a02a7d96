"""Replicated Redis on loopback for tests and failover chaos: a Redis Cluster (N primaries,
one replica each) or a Sentinel-managed primary with a replica and three sentinels.

Real ``redis-server`` processes with AOF fsynced on every write, started and stopped here,
so a test can SIGKILL the primary that holds a node's slot and watch its replica take over.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import redis

from xferd_lab.embedded import answers, port_free
from xferd.state.topology import redact


# every write fsynced before its reply: a SIGKILLed server loses nothing it acknowledged
PERSISTENT = ("--appendonly", "yes", "--appendfsync", "always", "--save", "", "--repl-diskless-sync-delay", "0")


class CannotStart(RuntimeError):
    """The topology could not be started here (no redis-server, ports taken); a test skips."""


def _free_ports(count: int, base: int, step: int = 1, also_bus: bool = False) -> list[int]:
    """``count`` free ports from ``base`` on (with the cluster bus port, port + 10000, free too)."""
    found, port = [], base
    while len(found) < count and port < base + 2000:
        if port_free(port) and (not also_bus or port_free(port + 10000)):
            found.append(port)
        port += step
    if len(found) < count:
        raise CannotStart(f"no {count} free loopback ports from {base}")
    return found


class _Servers:
    """redis-server children in one temporary folder, by port."""

    def __init__(self, prefix: str, password: str = ""):
        binary = shutil.which("redis-server")
        if binary is None:
            raise CannotStart("redis-server is not installed")
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.processes: dict[int, subprocess.Popen] = {}
        self.args: dict[int, list[str]] = {}
        self.password = password  # the data servers'; sentinels ask none

    def data_options(self) -> tuple[str, ...]:
        auth = ("--requirepass", self.password, "--masterauth", self.password) if self.password else ()
        return (*PERSISTENT, *auth)

    def client(self, port: int, auth: bool = True) -> redis.Redis:
        return redis.Redis(port=port, password=self.password if auth and self.password else None,
                           socket_connect_timeout=1, socket_timeout=5, decode_responses=True)

    def replica_synced(self, port: int) -> bool:
        info = self.client(port).info("replication")
        return info["role"] == "slave" and info.get("master_link_status") == "up"

    def spawn(self, port: int, *args: str) -> None:
        """``args``: options, or a config file first (a sentinel's)."""
        folder = os.path.join(self.dir, str(port))
        os.makedirs(folder, exist_ok=True)
        self.args.setdefault(port, list(args))  # as first started, for restarts
        config = list(args[:1]) if args and not args[0].startswith("--") else []
        self.processes[port] = subprocess.Popen(
            [self.binary, *config, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
             *args[len(config):]], stdout=open(os.path.join(folder, "log"), "a"), stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_up(self, port: int, within: float = 10.0, auth: bool = True) -> None:
        userinfo = f":{self.password}@" if auth and self.password else ""
        if not answers(f"redis://{userinfo}127.0.0.1:{port}", within):
            raise CannotStart(f"redis-server on port {port} did not start (log: {self.dir}/{port}/log)")

    def replicas_of(self, port: int) -> list[int]:
        info = self.client(port).info("replication")
        return [int(info[f"slave{i}"]["port"]) for i in range(int(info.get("connected_slaves", 0)))]

    def signal(self, port: int, signum: int) -> None:
        self.processes[port].send_signal(signum)

    def kill(self, port: int) -> None:
        """SIGKILL: no shutdown, no last fsync."""
        process = self.processes.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def restart(self, port: int, *extra: str) -> None:
        """Start a killed server again with its options (a later one overrides an earlier)."""
        self.spawn(port, *self.args[port], *extra)
        self.wait_up(port)

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
        for process in self.processes.values():
            process.wait()
        self.processes.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


class _Replicated:
    """Servers started by ``start`` (in subclasses), all stopped by ``stop``."""

    servers: _Servers | None = None

    def start(self):
        raise NotImplementedError

    def stop(self) -> None:
        if self.servers is not None:
            self.servers.stop()
            self.servers = None

    def primary_port(self, key: str) -> int:
        raise NotImplementedError

    def kill_primary_of(self, key: str, lag_s: float = 0.0) -> int:
        """SIGKILL the primary serving ``key``; returns its port. With ``lag_s``, its replicas
        are cut off that long first (SIGSTOPped, their links closed by the primary, SIGCONTed
        after the kill), so the primary dies with writes no replica has: what asynchronous
        replication loses in a failover. (A SIGSTOP alone loses nothing on loopback: the
        kernel keeps taking the replication stream into the stopped replica's socket.)"""
        port = self.primary_port(key)
        replicas = self.servers.replicas_of(port) if lag_s else []
        for replica in replicas:
            self.servers.signal(replica, signal.SIGSTOP)
        if replicas:
            self.servers.client(port).client_kill_filter(_type="replica")
        time.sleep(lag_s)
        self.servers.kill(port)
        for replica in replicas:
            self.servers.signal(replica, signal.SIGCONT)
        return port

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LocalCluster(_Replicated):
    """``primaries`` primaries and one replica each, cluster-node-timeout ``node_timeout_ms``."""

    def __init__(self, primaries: int = 3, node_timeout_ms: int = 1000, base_port: int = 17100,
                 password: str = ""):
        self.primaries, self.node_timeout_ms, self.base_port = primaries, node_timeout_ms, base_port
        self.password = password
        self.ports: list[int] = []

    @property
    def url(self) -> str:
        return f"redis://{f':{self.password}@' if self.password else ''}127.0.0.1:{self.ports[0]}"

    def start(self) -> "LocalCluster":
        self.servers = _Servers("xferd-cluster-", self.password)
        try:
            self.ports = _free_ports(2 * self.primaries, self.base_port, also_bus=True)
            for port in self.ports:
                self.servers.spawn(port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                   "--cluster-node-timeout", str(self.node_timeout_ms),
                                   *self.servers.data_options())
            for port in self.ports:
                self.servers.wait_up(port)
            created = subprocess.run(
                ["redis-cli", *(["-a", self.password, "--no-auth-warning"] if self.password else []),
                 "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                 "--cluster-replicas", "1", "--cluster-yes"], capture_output=True, text=True, timeout=60)
            if created.returncode != 0:
                raise CannotStart(f"redis-cli --cluster create failed: {created.stdout[-300:]}{created.stderr[-300:]}")
            self.wait_healthy(30)
        except BaseException:
            self.stop()
            raise
        return self

    def describe(self) -> str:
        return (f"local Redis Cluster, {self.primaries} primaries + {self.primaries} replicas (ports "
                f"{self.ports[0]}-{self.ports[-1]}), AOF fsync always")

    def _slots(self, port: int) -> list:
        return self.servers.client(port).execute_command("CLUSTER", "SLOTS")

    def wait_healthy(self, within: float) -> None:
        """Until every live node says cluster_state:ok and every shard has a synced replica."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                if all(self.servers.client(p).cluster("info")["cluster_state"] == "ok"
                       for p in self.live_ports()) and self._replicas_synced():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.2)
        raise CannotStart(f"the cluster on ports {self.ports} did not become healthy within {within:.0f}s")

    def _replicas_synced(self) -> bool:
        replicas = [p for p in self.live_ports() if self.servers.client(p).info("replication")["role"] == "slave"]
        return len(replicas) >= self.primaries and all(self.servers.replica_synced(p) for p in replicas)

    def live_ports(self) -> list[int]:
        return [p for p in self.ports if p in self.servers.processes]

    def primary_port(self, key: str) -> int:
        """The port of the primary that serves ``key``'s slot now."""
        for port in self.live_ports():
            try:
                slot = self.servers.client(port).cluster("keyslot", key)
                for start, end, primary, *_ in self._slots(port):
                    if start <= slot <= end:
                        return int(primary[1])
            except redis.RedisError:
                continue
        raise RuntimeError(f"no live node knows the slot of {key!r}")

    def wait_promoted(self, key: str, old_port: int, within: float = 30.0) -> float:
        """Seconds until a replica serves ``key``'s slot in place of ``old_port``."""
        start = time.monotonic()
        while time.monotonic() - start < within:
            try:
                if self.primary_port(key) != old_port and all(
                        self.servers.client(p).cluster("info")["cluster_state"] == "ok" for p in self.live_ports()):
                    return time.monotonic() - start
            except (RuntimeError, redis.RedisError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"no replica took over from port {old_port} within {within:.0f}s")

    def restart(self, port: int) -> None:
        """Start a killed node again (it rejoins as a replica of its shard's new primary)."""
        self.servers.restart(port)



class LocalSentinel(_Replicated):
    """A primary, one replica and three sentinels watching master ``service``."""

    def __init__(self, service: str = "xferd", down_after_ms: int = 1000, base_port: int = 17300,
                 password: str = ""):
        self.service, self.down_after_ms, self.base_port = service, down_after_ms, base_port
        self.password = password
        self.data_ports: list[int] = []
        self.sentinel_ports: list[int] = []
        self._promoted: int | None = None  # the master the last failover promoted

    @property
    def url(self) -> str:
        return f"redis+sentinel://{f':{self.password}@' if self.password else ''}" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports) + f"/{self.service}"

    def start(self) -> "LocalSentinel":
        self.servers = _Servers("xferd-sentinel-", self.password)
        try:
            ports = _free_ports(5, self.base_port)
            self.data_ports, self.sentinel_ports = ports[:2], ports[2:]
            primary, replica = self.data_ports
            self.servers.spawn(primary, *self.servers.data_options())
            self.servers.spawn(replica, *self.servers.data_options(), "--replicaof", "127.0.0.1", str(primary))
            for port in self.data_ports:
                self.servers.wait_up(port)
            for port in self.sentinel_ports:
                config = os.path.join(self.servers.dir, f"sentinel-{port}.conf")
                with open(config, "w") as file:
                    file.write(f"sentinel monitor {self.service} 127.0.0.1 {primary} 2\n"
                               f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                               f"sentinel failover-timeout {self.service} 5000\n"
                               f"sentinel parallel-syncs {self.service} 1\n"
                               + (f"sentinel auth-pass {self.service} {self.password}\n" if self.password else ""))
                self.servers.spawn(port, config, "--sentinel")
            for port in self.sentinel_ports:
                self.servers.wait_up(port, auth=False)
            self._wait(lambda: self.servers.replica_synced(replica)
                       and all(self._sentinel_sees_replica(p) for p in self.sentinel_ports), 30, "replica synced")
        except BaseException:
            self.stop()
            raise
        return self

    def _sentinel_sees_replica(self, port: int) -> bool:
        return int(self.servers.client(port, auth=False).sentinel_master(self.service)["num-slaves"]) >= 1

    @staticmethod
    def _wait(predicate, within: float, what: str) -> float:
        start = time.monotonic()
        while time.monotonic() - start < within:
            try:
                if predicate():
                    return time.monotonic() - start
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise CannotStart(f"sentinel set-up: {what} not reached within {within:.0f}s")

    def describe(self) -> str:
        return f"local Sentinel: primary + replica, 3 sentinels ({redact(self.url)}), AOF fsync always"

    def primary_port(self, key: str = "") -> int:
        """The master's port (it holds every key)."""
        for port in self.sentinel_ports:
            try:
                return int(self.servers.client(port, auth=False).execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)[1])
            except redis.RedisError:
                continue
        raise RuntimeError("no sentinel answers")

    def wait_promoted(self, key: str, old_port: int, within: float = 30.0) -> float:
        """Seconds until the sentinels name a new master that answers as one."""
        def promoted() -> bool:
            port = self.primary_port()
            if port != old_port and self.servers.client(port).info("replication")["role"] == "master":
                self._promoted = port
                return True
            return False
        return self._wait(promoted, within, "failover")

    def restart(self, port: int) -> None:
        """Start a killed server again as a replica of the new master (what its init system
        would do; left alone, the sentinels convert it within some seconds). The master is
        the one ``wait_promoted`` saw answer as such: a sentinel asked again may not know of
        the failover yet and name the killed server itself, which would then replicate
        nothing until the sentinels' next look (up to 10 s: longer than replica_timeout)."""
        master = self._promoted or self.primary_port()
        self.servers.restart(port, "--replicaof", "127.0.0.1", str(master))
