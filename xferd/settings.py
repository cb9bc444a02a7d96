"""Settings as one plain dataclass, read from XFERD_* environment variables and CLI flags.

A value that cannot work raises ConfigError with one readable line (``xferd`` prints it
and exits non-zero)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from xferd.state.keys import Keys
from xferd.protocol.layout import Layout, LayoutError, parse_layout
from xferd.logs import FORMATS, LEVELS
from xferd.state.topology import BadRedisURL, parse


# the settings that are the node's policy (seconds; the node record holds them in ms)
POLICY = ("bootstrap_timeout", "waiting_timeout", "transfer_timeout", "round_timeout", "retention",
          "alloc_timeout", "session_retention", "lease")


@dataclass
class Settings:
    redis_url: str | None = None  # None: `serve` uses the local default, `demo` embeds one
    prefix: str = "xferd"
    node: str = "node0"
    workers: int = 2
    rounds_per_worker: int = 1  # rounds one worker process writes at once (threads, one engine)
    ingress: str = "tcp://127.0.0.1:17500"  # bind address of the ingress PULL socket
    metrics: str = "127.0.0.1:17580"  # HOST:PORT of /metrics, /healthz, /readyz; '' turns it off
    log_format: str = "text"  # text | json (one object a line)
    log_level: str = "INFO"
    strict_bounds: bool = False  # refuse registrations that cannot be bounds-checked (see dst_pool_blocks)
    curve_secret_file: str = ""  # CurveZMQ: the ingress's secret key file (zmq.auth format)
    curve_clients_dir: str = ""  # CurveZMQ: directory of allowed language peers' public key files
    status_frames: int = 2  # [room, status] as the reference multimodal side reads; 3 adds sender_rank
    sender_rank: int = 0  # the third status frame, when status_frames is 3
    # the reference's HTTP bootstrap (/route, /health) on HOST:PORT; "" = off
    bootstrap: str = ""
    # destination pool size in blocks, for registrations that carry no buffer lengths
    # (the reference client never sends them): bounds every destination index; 0 = unknown
    dst_pool_blocks: int = 0
    # layout of the source pool (must match the language side's): see xferd/protocol/layout.py
    layout: str = "reference"  # reference | deepstack:K | name=SIZE/UNIT,...
    block_size: int = 128
    hidden_size: int = 4096
    pool_blocks: int = 1024
    pool_name: str = ""  # shared-memory file name; default "xferd-<prefix>-<node>"
    # Mooncake
    hostname: str = "127.0.0.1"
    protocol: str = "tcp"
    metadata: str = "P2PHANDSHAKE"
    device: str = ""
    # timeouts and retention, seconds
    bootstrap_timeout: float = 300.0
    waiting_timeout: float = 300.0
    transfer_timeout: float = 300.0
    round_timeout: float = 120.0
    alloc_timeout: float = 300.0  # an encoder must publish within this of allocating blocks
    retention: float = 3600.0
    # a language session's record is kept this long after its last register, init or resume
    # (the reference side registers once and then only inits: keep it above its idle spells)
    session_retention: float = 7 * 24 * 3600.0
    # work queue and fencing (docs/guarantees.md)
    # a worker that has not renewed its claim on an entry for this long (every lease/3 while
    # it writes) is stopped by the node (SIGKILL) and its round handed to another worker
    lease: float = 5.0
    # after stopping a worker, wait at most this long for its orphaned sockets to deliver
    # (or drop) the bytes it had handed to the kernel, before the round moves on
    drain_timeout: float = 5.0
    max_deliveries: int = 10  # hand-backs of one round before it goes to the dead letters
    # serve a node whose record says another host serves it (that host is gone for good)
    take_over: bool = False
    # replication (docs/guarantees.md): a take and every status wait until this many
    # replicas have them (WAIT), so a failover never rolls back what was acted on; a status
    # not confirmed within replica_timeout is held back and its room fails with the reason
    min_replicas: int = 0
    replica_timeout: float = 10.0
    janitor_interval: float = 0.2
    consumer_ttl: float = 60.0  # a worker silent this long, with nothing pending, is forgotten
    startup_timeout: float = 15.0  # `serve` exits, saying why, if Redis does not answer at start by then
    stop_timeout: float = 30.0  # a stopping serve (SIGTERM, `xferd drain`) lets rounds in flight finish this long

    def __post_init__(self) -> None:
        self.buffer_layout  # noqa: B018 - refuse a bad layout now, not in a child process
        if self.status_frames not in (2, 3):
            raise ConfigError(f"status_frames must be 2 (the reference multimodal form) or 3, "
                              f"got {self.status_frames}")
        if self.dst_pool_blocks < 0:
            raise ConfigError(f"dst_pool_blocks must be 0 (unknown) or positive, got {self.dst_pool_blocks}")
        if self.bootstrap:
            split_host_port(self.bootstrap, "bootstrap")
        if self.metrics:
            split_host_port(self.metrics, "metrics")
        if self.log_format not in FORMATS:
            raise ConfigError(f"log_format must be one of {', '.join(FORMATS)}, got {self.log_format!r}")
        if self.log_level.upper() not in LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LEVELS)}, got {self.log_level!r}")
        self._check_numbers()
        if self.redis_url:
            try:
                parse(self.redis_url)
            except BadRedisURL as error:
                raise ConfigError(f"redis_url: {error}") from None

    def _check_numbers(self) -> None:
        """Every number in its range, and the ones that depend on each other consistent."""
        at_least = {"block_size": 1, "hidden_size": 1, "pool_blocks": 1, "workers": 0, "rounds_per_worker": 1,
                    "dst_pool_blocks": 0, "max_deliveries": 1, "min_replicas": 0, "drain_timeout": 0}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be at least {low}, got {getattr(self, name)}")
        for name in ("bootstrap_timeout", "waiting_timeout", "transfer_timeout", "round_timeout", "alloc_timeout",
                     "retention", "session_retention", "lease", "replica_timeout", "janitor_interval", "consumer_ttl",
                     "startup_timeout", "stop_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive (seconds), got {getattr(self, name)}")
        for name, why in (("janitor_interval", "the fencer looks for stale writers once a janitor pass"),
                          ("round_timeout", "a round must outlive a lease to be redone after its writer stops")):
            low, high = (name, "lease") if name == "janitor_interval" else ("lease", name)
            if not getattr(self, low) < getattr(self, high):
                raise ConfigError(f"{high} ({getattr(self, high):g}s) must be above {low} "
                                  f"({getattr(self, low):g}s): {why}")

    @property
    def curve(self) -> bool:
        return bool(self.curve_secret_file)

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix, self.node)

    @property
    def buffer_layout(self) -> Layout:
        try:
            return parse_layout(self.layout, self.block_size, self.hidden_size)
        except LayoutError as error:
            raise ConfigError(f"layout: {error}") from None

    def advertised_ingress(self) -> tuple[str, int]:
        """(host, port) the language side reaches the ingress at: its bind address, or
        ``hostname`` where it binds every interface."""
        address = self.ingress.split("://", 1)[-1]
        host, port = split_host_port(address, "ingress")
        if host in ("*", "0.0.0.0", "::", "[::]", ""):
            host = self.hostname
        return host, port

    @property
    def shm_name(self) -> str:
        return self.pool_name or f"xferd-{self.prefix}-{self.node}"

    def policy(self) -> dict[str, str]:
        """The node's policy as its record holds it, in ms: every script reads it from there
        (the Lua prelude), so every process of the node, the encoder's included, applies the
        operator's."""
        return {f"{name}_ms": str(int(getattr(self, name) * 1000)) for name in POLICY}

    def policy_disagreement(self, record: dict[str, str]) -> str | None:
        """How these settings' policy differs from the one in a node's record, or None."""
        differ = [f"{name} {getattr(self, name):g}s (the node: {int(record[f'{name}_ms']) / 1000:g}s)"
                  for name in POLICY if f"{name}_ms" in record
                  and int(record[f"{name}_ms"]) != int(getattr(self, name) * 1000)]
        return ", ".join(differ) or None

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def to_env(self, base=os.environ) -> dict[str, str]:
        """``base`` plus these settings as XFERD_* variables, for a child `xferd serve`."""
        env = dict(base)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                env[f"XFERD_{f.name.upper()}"] = str(value)
        return env

    @classmethod
    def from_env(cls, environ=os.environ, **overrides) -> "Settings":
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f"XFERD_{f.name.upper()}")
            if raw is None:
                continue
            kind = type(f.default) if f.default is not None else str
            if kind is bool:
                values[f.name] = _parse_bool(f.name, raw)
                continue
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ConfigError(f"XFERD_{f.name.upper()}={raw!r} is not a valid {kind.__name__}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class ConfigError(ValueError):
    """A setting that cannot work; the message is one line for the operator."""


def split_host_port(address: str, what: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} {address!r} is not HOST:PORT")
    return host.strip("[]") if host.startswith("[") else host, int(port)


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"XFERD_{name.upper()}={raw!r} is not a boolean (true/false)")
