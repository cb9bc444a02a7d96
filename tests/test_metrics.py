"""/metrics, /healthz and /readyz of `xferd serve`, scraped over HTTP during real transfers
and parsed with prometheus_client's own parser: rounds, bytes and room ends move by exactly
what happened; histograms add up; readiness follows Redis."""
from __future__ import annotations

import re
import threading
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from conftest import clients, start_node, start_room, wait_for
from xferd_lab.embedded import EmbeddedRedis
from xferd.ops.metrics import BUCKETS, cumulative
from xferd.protocol.status import Status
from xferd.state import scripts
from xferd_lab.synthetic import room_data


def test_the_lua_histogram_buckets_are_the_python_ones():
    source = scripts.load("commit_round").source  # what Redis runs
    lua = re.search(r"local BUCKETS = \{([^}]*)\}", source).group(1)
    assert tuple(float(x) for x in lua.split(",")) == BUCKETS


def test_bucket_fields_become_cumulative_prometheus_buckets():
    fields = {"hist:t:0.001": "2", "hist:t:1": "3", "hist:t:+Inf": "1", "hist:t:sum_ms": "9500", "other": "7"}
    buckets, total = cumulative(fields, "t")
    assert total == 9.5 and len(buckets) == len(BUCKETS) + 1
    assert dict(buckets)["0.001"] == 2 and dict(buckets)["0.5"] == 2 and dict(buckets)["1.0"] == 5
    assert buckets[-1] == ("+Inf", 6)
    assert cumulative({}, "t")[0][-1] == ("+Inf", 0)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(node) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    code, text = get(f"http://{node.settings.metrics}/metrics")
    assert code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def delta(before, after, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


def test_a_room_moves_rounds_bytes_and_ends_by_exactly_what_happened(redis_url, tmp_path_factory):
    node = start_node(redis_url, tmp_path_factory, hidden_size=256)
    try:
        assert get(f"http://{node.settings.metrics}/readyz") == (200, "OK")
        assert get(f"http://{node.settings.metrics}/healthz") == (200, "OK")
        code, text = get(f"http://{node.settings.metrics}/nothing")
        assert code == 404 and "/metrics" in text
        with clients(node) as (sender, rx):
            before = scrape(node)
            room, _ = start_room(sender, rx, 2000, list(range(8)), 1024)  # 2000 tokens, 1024 a round
            assert rx.wait(room, 10) == Status.Transferring
            rx.resume(room, list(range(8, 16)), 1024, 1024)
            assert rx.wait(room, 10) == Status.Success
            # a room that fails as bad input: its init offers 2 blocks for 1024 tokens
            bad = 7_000_001
            sender.send(bad, 300, room_data(bad, 300, sender.layout))
            rx.init(bad, [20, 21], 1024)
            assert rx.wait(bad, 10) == Status.Failed
            aborted = 7_000_002
            sender.send(aborted, 300, room_data(aborted, 300, sender.layout))
            sender.abort(aborted)
            assert wait_for(lambda: node.store.status(aborted) == Status.Failed)
            # the ingress adds its counts to the node's when idle (or every second)
            assert wait_for(lambda: delta(before, scrape(node), "xferd_ingress_messages_total", kind="init") == 2)
            after = scrape(node)
        layout = node.settings.buffer_layout
        per_token = sum(layout.token_bytes(i) for i, b in enumerate(layout.buffers) if b.per_token)
        first_block_items = sum(b.item_len for b in layout.buffers if not b.per_token)
        assert delta(before, after, "xferd_rounds_total") == 2
        assert delta(before, after, "xferd_bytes_written_total") == 2000 * per_token + first_block_items
        assert delta(before, after, "xferd_rooms_ended_total", outcome="success", failure_class="") == 1
        assert delta(before, after, "xferd_rooms_ended_total", outcome="failed", failure_class="bad_input") == 1
        assert delta(before, after, "xferd_rooms_ended_total", outcome="failed", failure_class="aborted") == 1
        assert delta(before, after, "xferd_rooms_ended_total", outcome="failed", failure_class="timeout") == 0
        assert delta(before, after, "xferd_round_seconds_count") == 2
        assert delta(before, after, "xferd_round_seconds_bucket", le="+Inf") == 2
        assert 0 < delta(before, after, "xferd_round_seconds_sum") < 10
        assert delta(before, after, "xferd_room_seconds_count") == 1
        assert delta(before, after, "xferd_ingress_messages_total", kind="init") == 2
        assert delta(before, after, "xferd_ingress_messages_total", kind="resume") == 1
        assert delta(before, after, "xferd_ingress_rejected_total", reason="allocation") == 1
        assert after[("xferd_redis_up", ())] == 1
        assert after[("xferd_pool_blocks", (("state", "free"),))] == node.settings.pool_blocks
        assert after[("xferd_pool_blocks", (("state", "held"),))] == 0
        assert after[("xferd_workers_live", ())] == node.settings.workers * node.settings.rounds_per_worker
        assert after[("xferd_queue_depth", ())] == 0 and after[("xferd_pending_entries", ())] == 0
    finally:
        node.stop()


def test_readyz_is_false_while_redis_is_down_and_true_again_after(tmp_path_factory):
    with EmbeddedRedis(aof=True) as redis_server:
        node = start_node(redis_server.url, tmp_path_factory)
        try:
            readyz = f"http://{node.settings.metrics}/readyz"
            assert get(readyz) == (200, "OK")
            seen = []
            down = threading.Thread(target=redis_server.crash_restart, kwargs={"down_for": 3.0})
            down.start()
            assert wait_for(lambda: seen.append(get(readyz)) or seen[-1][0] == 503, 5), seen
            assert "does not answer" in seen[-1][1]
            assert get(f"http://{node.settings.metrics}/healthz") == (200, "OK"), "the processes still run"
            code, text = get(f"http://{node.settings.metrics}/metrics")
            assert code == 200 and "xferd_redis_up 0.0" in text
            down.join()
            assert wait_for(lambda: get(readyz) == (200, "OK"), 15)
        finally:
            node.stop()


def test_readyz_is_false_while_the_ingress_cannot_bind(redis_url, tmp_path_factory):
    """The ingress died and its port was taken before serve could restart it: not ready,
    saying why, until the port is free again and the restarted ingress binds it."""
    import os
    import signal

    from xferd_lab.chaos import children_of
    from xferd_lab.cpu import title

    node = start_node(redis_url, tmp_path_factory, workers=1)
    readyz = f"http://{node.settings.metrics}/readyz"
    taken = None
    try:
        assert get(readyz) == (200, "OK")
        ingress = next(pid for pid in children_of(node.process.pid) if "ingress" in title(pid))
        port = int(node.settings.ingress.rsplit(":", 1)[1])
        node.process.send_signal(signal.SIGSTOP)  # so that serve cannot restart it before we bind
        try:
            os.kill(ingress, signal.SIGKILL)
            taken = _bind(port)
        finally:
            node.process.send_signal(signal.SIGCONT)
        assert wait_for(lambda: get(readyz)[0] == 503, 10)
        assert "ingress is not ready" in get(readyz)[1]
        assert get(f"http://{node.settings.metrics}/healthz")[0] in (200, 503)  # restarting: either
        taken.close()
        taken = None
        assert wait_for(lambda: get(readyz) == (200, "OK"), 30), "the restarted ingress binds it"
    finally:
        if taken is not None:
            taken.close()
        node.stop()


def _bind(port: int, within: float = 5.0):
    """A listening socket on ``port`` once it is free (the killed ingress's is closing)."""
    import socket
    import time
    deadline = time.monotonic() + within
    while True:
        try:
            return socket.create_server(("127.0.0.1", port))
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
