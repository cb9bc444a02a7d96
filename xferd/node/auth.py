"""CurveZMQ for the ingress: only language peers whose public keys the operator allowed
may send, and each may act only for the sessions it registered.

Key files are pyzmq's certificate format (``zmq.auth.create_certificates``, or
``xferd keygen DIR NAME``): the ingress loads its key pair from ``curve_secret_file`` and
allows every public key found in ``curve_clients_dir``. Peers without an allowed key are
refused in the handshake, before any message reaches xferd.
"""
from __future__ import annotations

import os

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from xferd.settings import Settings


def keygen(directory: str, name: str) -> tuple[str, str]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` into ``directory``."""
    os.makedirs(directory, exist_ok=True)
    return zmq.auth.create_certificates(directory, name)


def _load(path: str, need_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read CurveZMQ key file {path}: {error}") from None
    if need_secret and not secret:
        raise ValueError(f"CurveZMQ key file {path} has no secret key")
    return public, secret


def secure_server(socket: zmq.Socket, context: zmq.Context, settings: Settings) -> ThreadAuthenticator | None:
    """Make ``socket`` a CURVE server allowing the keys in ``curve_clients_dir`` (None: off)."""
    if not settings.curve:
        return None
    if not settings.curve_clients_dir or not os.path.isdir(settings.curve_clients_dir):
        raise ValueError(f"curve_clients_dir {settings.curve_clients_dir!r} is not a directory of "
                         "allowed public keys")
    public, secret = _load(settings.curve_secret_file, need_secret=True)
    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    authenticator.configure_curve(domain="*", location=settings.curve_clients_dir)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return authenticator


def secure_client(socket: zmq.Socket, client_secret_file: str, server_public_file: str) -> None:
    """Make ``socket`` a CURVE client of the ingress whose public key is in ``server_public_file``."""
    public, secret = _load(client_secret_file, need_secret=True)
    server_public, _ = _load(server_public_file, need_secret=False)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = server_public


def peer_of(frame: zmq.Frame) -> str:
    """The authenticated peer's public key (z85) that sent ``frame``; '' without CURVE."""
    try:
        return frame.get("User-Id") or ""
    except (zmq.ZMQError, KeyError):
        return ""
