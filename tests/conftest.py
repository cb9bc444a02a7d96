"""Shared fixtures: Redis back-ends (fakeredis and the real local Redis), a running node."""
from __future__ import annotations

import contextlib
import os
import time
import uuid

import fakeredis
import pytest

from xferd.state.connections import connect
from xferd_lab.embedded import free_port, local_or_embedded
from xferd_lab.local_redis import CannotStart, LocalCluster, LocalSentinel
from xferd.node.processes import start_serve, stop_process
from xferd.settings import Settings
from xferd.state.store import Store

LOCAL_REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_url():
    """The machine's Redis; a private redis-server if none answers on 6379."""
    url, embedded = local_or_embedded(LOCAL_REDIS)
    yield url
    if embedded is not None:
        embedded.stop()


def wait_for(predicate, timeout=10.0) -> bool:
    """Poll ``predicate`` until true or ``timeout`` s pass; returns whether it came true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _cleanup(client, settings: Settings) -> None:
    for key in client.scan_iter(f"{settings.prefix}:*", count=1000):
        client.delete(key)


def make_settings(**overrides) -> Settings:
    values = dict(prefix=f"xt{uuid.uuid4().hex[:8]}", node="n1", block_size=128,
                  hidden_size=64, pool_blocks=256, metrics=f"127.0.0.1:{free_port()}")
    values.update(overrides)
    return Settings(**values)


def _started(setup, what: str):
    """``setup`` started for the session, stopped after; the tests skip when it cannot start
    here (no redis-server, ports taken), with the reason."""
    try:
        setup.start()
    except CannotStart as error:
        pytest.skip(f"no local {what}: {error}")
    yield setup
    setup.stop()


@pytest.fixture(scope="session")
def redis_cluster():
    """A local Redis Cluster: 3 primaries, 1 replica each."""
    yield from _started(LocalCluster(), "Redis Cluster")


@pytest.fixture(scope="session")
def redis_sentinel():
    """A local Sentinel set-up: primary, replica, 3 sentinels."""
    yield from _started(LocalSentinel(), "Sentinel")


@pytest.fixture(params=["fakeredis", "redis", "cluster"])
def store(request, redis_url):
    """A Store on fakeredis (with Lua), on the real Redis and on a local Redis Cluster, under
    a private key prefix; on the real ones the scripts go by the workers' direct path."""
    if request.param == "fakeredis":
        client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        settings = make_settings(redis_url=None)
    else:
        url = redis_url if request.param == "redis" else request.getfixturevalue("redis_cluster").url
        settings = make_settings(redis_url=url)
        client = connect(url)
    store = Store(client, settings, direct=request.param != "fakeredis")
    store.ensure_groups()
    store.load_scripts()  # as a worker does at start, so round-trip counts see no NOSCRIPT miss
    store.init_pool(settings.pool_blocks, {"shm": "test"})
    yield store
    _cleanup(client, settings)


class Node:
    """`xferd serve` as a child process with its own prefix, ingress port and pool."""

    def __init__(self, settings: Settings, log_path: str, env_extra: dict | None = None):
        self.settings = settings
        self.log_path = log_path
        self.store = Store(connect(settings.redis_url), settings)
        env = settings.to_env(dict(os.environ, **(env_extra or {})))
        self.log = open(log_path, "w")
        try:
            self.process = start_serve(settings, self.store, self.log, env)
        except RuntimeError:
            self.log.close()
            _cleanup(self.store.client, settings)
            raise

    def log_text(self) -> str:
        """What serve and its processes logged so far."""
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()
        _cleanup(self.store.client, self.settings)
        try:
            os.unlink(f"/dev/shm/{self.settings.shm_name}")
        except FileNotFoundError:
            pass


def start_node(redis_url: str, tmp_path_factory, env: dict | None = None, **overrides) -> Node:
    settings = make_settings(redis_url=redis_url, ingress=f"tcp://127.0.0.1:{free_port()}", **overrides)
    settings = settings.replace(pool_name=f"xferd-{settings.prefix}")
    log_path = str(tmp_path_factory.mktemp("node") / "serve.log")
    return Node(settings, log_path, env)


@pytest.fixture(scope="module")
def node(redis_url, tmp_path_factory):
    """A running node (2 workers) on the real Redis, shared by one test module."""
    running = start_node(redis_url, tmp_path_factory, pool_blocks=1024)
    yield running
    running.stop()


@pytest.fixture
def lone_worker(redis_url):
    """(store, worker): one in-process worker lane of a 16-block node on the real Redis, with
    no `serve` around it, for driving its steps by hand."""
    from xferd.transfer.pool import SourcePool
    from xferd.node.worker import Worker

    settings = make_settings(redis_url=redis_url, pool_blocks=16, lease=60.0)
    settings = settings.replace(pool_name=f"xferd-{settings.prefix}")
    pool = SourcePool(settings.buffer_layout, 16, settings.shm_name, create=True)
    store = Store(connect(redis_url), settings)
    store.ensure_groups()
    store.init_pool(16, {"shm": "test"})
    made = Worker(settings)
    try:
        yield store, made
    finally:
        made.keeper.close()
        pool.unlink()
        _cleanup(store.client, settings)


@contextlib.contextmanager
def clients(node: Node, dest_blocks: int = 64, **receiver_options):
    """An encoder-side Sender and a registered language-side Receiver for ``node``."""
    from xferd.client.receiver import Receiver
    from xferd.client.sender import Sender

    receiver = Receiver(node.settings.ingress, node.settings.buffer_layout, dest_blocks, store=node.store,
                        **receiver_options)
    try:
        receiver.register()
        yield Sender(node.settings, node.store), receiver
    finally:
        receiver.close()


def start_room(sender, receiver, total_tokens: int, blocks: list[int], allocated_tokens: int):
    """A new room: the encoder publishes ``total_tokens`` of deterministic data, the receiver
    sends init for ``blocks``. Returns (room, data)."""
    import random

    from xferd_lab.synthetic import room_data

    room = random.getrandbits(62)
    data = room_data(room, total_tokens, sender.layout)
    sender.send(room, total_tokens, data)
    receiver.init(room, blocks, allocated_tokens)
    return room, data


def receiver_process(ingress: str, settings: Settings, inits: list[tuple[int, list[int], int]], queue) -> None:
    """A language-side process (run with multiprocessing 'spawn'): registers, sends each
    (room, blocks, allocated_tokens) init, reports its session id, then waits to be killed."""
    from xferd.client.receiver import Receiver

    receiver = Receiver(ingress, settings.buffer_layout, 64)
    receiver.register()
    for room, blocks, allocated in inits:
        receiver.init(room, blocks, allocated)
    queue.put(receiver.session_id)
    time.sleep(3600)

