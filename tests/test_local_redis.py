"""The replicated Redis set-ups the failover tests run on: taken ports are passed over, and
a set-up that cannot start says why (its tests skip with that reason)."""
from __future__ import annotations

import socket

import pytest

from xferd_lab import local_redis
from xferd_lab.local_redis import CannotStart, LocalCluster, LocalSentinel


def test_taken_ports_and_their_bus_ports_are_passed_over():
    port = local_redis._free_ports(1, 21000, also_bus=True)[0]
    with socket.socket() as taken, socket.socket() as bus:
        taken.bind(("127.0.0.1", port))
        bus.bind(("127.0.0.1", port + 1 + 10000))  # the next port's cluster bus
        found = local_redis._free_ports(3, port, also_bus=True)
    assert port not in found and port + 1 not in found and len(found) == 3


@pytest.mark.parametrize("setup", [LocalCluster, LocalSentinel])
def test_no_redis_server_is_a_reason_not_a_crash(monkeypatch, setup):
    monkeypatch.setattr(local_redis.shutil, "which", lambda name: None)
    with pytest.raises(CannotStart, match="redis-server is not installed"):
        setup().start()
