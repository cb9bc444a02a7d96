"""Access (docs/using.md): CurveZMQ on the ingress with real `xferd serve`, real
Mooncake and real Redis; Redis passwords never reach logs or `xferd inspect`."""
from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest
import torch

from conftest import start_node, start_room
from xferd.node.auth import keygen
from xferd_lab.embedded import answers, free_port
from xferd_lab.local_redis import CannotStart, LocalCluster, LocalSentinel
from xferd.client.receiver import IngressUnreachable, Receiver
from xferd.client.sender import Sender
from xferd.protocol.status import Status

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    keygen(str(root / "server"), "ingress")
    keygen(str(root / "allowed"), "lang")
    keygen(str(root / "other"), "stranger")
    return root


@pytest.fixture(scope="module")
def curve_node(redis_url, tmp_path_factory, keys):
    node = start_node(redis_url, tmp_path_factory, curve_secret_file=str(keys / "server" / "ingress.key_secret"),
                      curve_clients_dir=str(keys / "allowed"), strict_bounds=True)
    yield node
    node.stop()


def receiver(node, keys, client=None):
    curve = None if client is None else (str(client), str(keys / "server" / "ingress.key"))
    return Receiver(node.settings.ingress, node.settings.buffer_layout, 64, store=node.store, curve=curve,
                    resend_after=60, send_timeout=1.0)


def test_an_allowed_peer_transfers(curve_node, keys):
    rx = receiver(curve_node, keys, keys / "allowed" / "lang.key_secret")
    try:
        rx.register()
        time.sleep(0.3)
        room, data = start_room(Sender(curve_node.settings, curve_node.store), rx, 500, [0, 1, 2, 3], 512)
        assert rx.wait(room, 15) == Status.Success
        assert torch.equal(rx.pool.read_tokens(0, [0, 1, 2, 3], 500), data[0])
        owner = curve_node.store.session_owner(rx.session_id)
        assert owner and len(owner) == 40, "the session is bound to the peer's public key (z85)"
    finally:
        rx.close()


@pytest.mark.parametrize("client", ["other/stranger.key_secret", None], ids=["unknown-key", "no-curve"])
def test_a_peer_without_an_allowed_key_is_never_heard(curve_node, keys, client):
    rx = receiver(curve_node, keys, keys / client if client else None)
    try:
        room = random.getrandbits(62)
        try:
            rx.register()
            rx.init(room, [0], 128)
        except IngressUnreachable:
            pass  # refused in the handshake before libzmq could even queue the message
        time.sleep(1.0)
        assert curve_node.store.session_owner(rx.session_id) is None
        assert curve_node.store.status(room) is None, "refused in the handshake: no room record"
    finally:
        rx.close()


@pytest.fixture
def tls_redis(tmp_path):
    """A private redis-server speaking only TLS, with a password: (rediss:// URL, password)."""
    secret = f"pw-{random.getrandbits(40):x}"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                               "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                               "--tls-auth-clients", "no", "--requirepass", secret, "--save", "",
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://:{secret}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    try:
        assert answers(url, within=10.0), "TLS redis-server did not start"
        yield url, secret
    finally:
        server.terminate()
        server.wait(10)


def serve_transfer_inspect(url: str, tmp_path_factory) -> tuple[str, str]:
    """`serve` on ``url``, one room transferred byte-exact, then `xferd inspect` of that room:
    (serve's log, inspect's stdout and stderr)."""
    node = start_node(url, tmp_path_factory)
    try:
        rx = Receiver(node.settings.ingress, node.settings.buffer_layout, 16, store=node.store)
        try:
            rx.register()
            time.sleep(0.3)
            room, data = start_room(Sender(node.settings, node.store), rx, 300, [3, 4, 5], 384)
            assert rx.wait(room, 15) == Status.Success
            assert torch.equal(rx.pool.read_tokens(0, [3, 4, 5], 300), data[0])
        finally:
            rx.close()
        shown = subprocess.run([sys.executable, "-m", "xferd", "inspect", str(room), "--redis", url,
                                "--prefix", node.settings.prefix, "--node", node.settings.node],
                               capture_output=True, text=True, timeout=60)
        assert "Success" in shown.stdout, shown.stdout + shown.stderr
    finally:
        node.stop()
    return open(node.log_path).read(), shown.stdout + shown.stderr


def test_tls_and_a_password_and_no_secret_in_logs_or_inspect(tls_redis, tmp_path_factory):
    """`serve`, a transfer and `inspect` through rediss:// with a password, which never
    appears in their output; a wrong password stops `serve` with a clear message."""
    url, secret = tls_redis
    log, shown = serve_transfer_inspect(url, tmp_path_factory)
    assert "rediss://***@" in shown and secret not in shown
    assert "serving node" in log and "rediss://***@" in log and secret not in log
    wrong = url.replace(secret, secret + "x")
    done = subprocess.run([sys.executable, "-m", "xferd", "serve", "--redis", wrong, "--ingress",
                           f"tcp://127.0.0.1:{free_port()}", "--prefix", "xsecret"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "refused the credentials" in done.stderr
    assert secret not in done.stdout + done.stderr


def test_a_unix_socket_url_with_a_password(tmp_path, tmp_path_factory):
    """`unix://` (a Redis on the same host, no TCP): serve, a transfer and inspect work, and
    the password given as ``?password=`` never reaches the log or inspect's output."""
    secret = f"pw-{random.getrandbits(40):x}"
    socket_path = tmp_path / "redis.sock"
    server = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(socket_path),
                               "--unixsocketperm", "700", "--requirepass", secret, "--save", "",
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"unix://{socket_path}?db=0&password={secret}"
    try:
        assert answers(url, within=10.0), "redis-server on a unix socket did not start"
        log, shown = serve_transfer_inspect(url, tmp_path_factory)
        assert secret not in shown
        assert "serving node" in log and "password=***" in log and secret not in log
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.parametrize("setup", [LocalCluster, LocalSentinel])
def test_a_password_on_a_cluster_and_on_sentinel(setup, tmp_path_factory):
    """The same through a cluster and a Sentinel master whose servers want a password (given
    once, in the URL): it never reaches the log or inspect, which names the node's primary."""
    secret = f"pw-{random.getrandbits(40):x}"
    try:
        replicated = setup(password=secret).start()
    except CannotStart as error:
        pytest.skip(f"cannot start: {error}")
    try:
        log, shown = serve_transfer_inspect(replicated.url, tmp_path_factory)
        assert secret not in log and secret not in shown
        assert "held by 127.0.0.1:" in shown and "held by 127.0.0.1:" in log
    finally:
        replicated.stop()
