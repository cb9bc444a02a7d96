"""The reference embedding side on xferd: the SGLang encoder stand-in
(``xferd_lab/sglang_standin``, written from the fork's calls) runs under `xferd
sglang-encoder` against `xferd serve --bootstrap` (real Redis, real Mooncake, separate
processes), with a language side speaking the reference format; every byte is compared
with what the stand-in's model computed."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest
import torch

from conftest import start_node, wait_for
from reference_client import (FAILED, SUCCESS, ReferenceBuffers, ReferenceRank, free_lists, http_get,
                              receive)
from xferd_lab.embedded import free_port

pytestmark = pytest.mark.integration
HIDDEN, BLOCK, DEST_BLOCKS, POOL = 64, 128, 96, 64
STANDIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "xferd_lab", "sglang_standin")
sys.path.insert(0, STANDIN)
from sglang.standin_model import request_data  # noqa: E402  (the stand-in's model, in this process: no hook)


def start(redis_url, tmp_path_factory, **overrides):
    return start_node(redis_url, tmp_path_factory, bootstrap=f"127.0.0.1:{free_port()}", hidden_size=HIDDEN,
                      block_size=BLOCK, pool_blocks=POOL, **overrides)


@pytest.fixture(scope="module")
def reference_node(redis_url, tmp_path_factory):
    node = start(redis_url, tmp_path_factory, dst_pool_blocks=DEST_BLOCKS, lease=1.0, janitor_interval=0.2)
    yield node
    node.stop()


@pytest.fixture(scope="module")
def deepstack_node(redis_url, tmp_path_factory):
    node = start(redis_url, tmp_path_factory, layout="deepstack:2", dst_pool_blocks=DEST_BLOCKS)
    yield node
    node.stop()


class Encoder:
    """The stand-in encoder server under `xferd sglang-encoder`, one process per TP rank."""

    def __init__(self, node, tmp_path, plan: list[dict], tp: int = 1, deepstack: int = 0, wrap: bool = True,
                 block_size: int = BLOCK, extra_env: dict | None = None, deadline_s: float = 60.0,
                 bootstrap_port: int | None = None):
        self.node, self.plan, self.tp = node, plan, tp
        tag = uuid.uuid4().hex[:6]
        self.requests, self.results = str(tmp_path / f"requests-{tag}.json"), str(tmp_path / f"results-{tag}")
        with open(self.requests, "w") as f:
            json.dump(plan, f)
        env = node.settings.to_env(dict(os.environ, **(extra_env or {})))
        env["PYTHONPATH"] = os.pathsep.join([STANDIN] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        env.update(SGLANG_EMBEDDING_CACHE_BUFFER_SIZE=str(POOL), SGLANG_EMBEDDING_CACHE_BLOCK_SIZE=str(block_size))
        command = [sys.executable, "-m", "sglang.launch_server", "--disaggregation-mode", "encode",
                   "--tp-size", str(tp), "--hidden-size", str(HIDDEN), "--deepstack", str(deepstack),
                   "--disaggregation-bootstrap-port", str(bootstrap_port or node.settings.bootstrap.rsplit(":", 1)[1]),
                   "--requests", self.requests, "--results", self.results, "--deadline-s", str(deadline_s)]
        if wrap:
            command = [sys.executable, "-m", "xferd", "sglang-encoder", "--"] + command
        self.log = open(str(tmp_path / f"encoder-{tag}.log"), "w+")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def wait(self, timeout: float = 90.0) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self.log.flush()

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def outcomes(self, rank: int = 0) -> dict[str, dict]:
        path = f"{self.results}.rank{rank}"
        if not os.path.exists(path):
            return {}
        with open(path) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        return {line["rid"]: line for line in lines if "rid" in line}

    def summary(self, rank: int = 0) -> dict:
        with open(f"{self.results}.rank{rank}") as f:
            return [json.loads(line) for line in f if '"summary"' in line][-1]


def plan_of(rooms: list[tuple[int, int]], **fields) -> list[dict]:
    return [{"rid": f"req-{room}", "room": room, "tokens": tokens, **fields} for room, tokens in rooms]


def language(node, count: int, deepstack: int = 0) -> list[ReferenceRank]:
    made = [ReferenceRank(node.settings.bootstrap, ReferenceBuffers(DEST_BLOCKS, BLOCK, HIDDEN, deepstack),
                          engine_rank=r, tp_size=count) for r in range(count)]
    time.sleep(0.3)
    return made


def close(ranks):
    for rank in ranks:
        assert rank.status_thread_error is None
        rank.close()


def assert_every_byte(result, room: int, tokens: int, deepstack: int = 0) -> None:
    want = request_data(room, tokens, HIDDEN, deepstack)
    data = result.data
    assert result.status == SUCCESS and result.tails_untouched
    assert torch.equal(data["embeddings"], want["embedding"][:, :HIDDEN])
    assert torch.equal(data["fill_ids"], want["input_ids"])
    assert torch.equal(data["mrope"], want["mrope_positions"])
    assert data["aux"][:2].tolist() == [tokens, int(want["mrope_position_delta"][0][0])]
    if deepstack:
        assert torch.equal(data["deep"], want["embedding"][:, HIDDEN:])


def rooms_of(sizes: list[int]) -> list[tuple[int, int]]:
    return [(random.getrandbits(62), tokens) for tokens in sizes]


def pool_full(node) -> bool:
    return node.store.free_blocks() == POOL


@pytest.mark.parametrize("tp,ranks,sizes,first,cap,rounds", [
    (1, 1, [2000, 300, 1024], 1024, 1024, [2, 1, 1]),
    (2, 2, [2000, 5000], 1024, 1536, [2, 4]),
])
def test_encoder_rooms_resume_and_land_every_byte(reference_node, tmp_path, tp, ranks, sizes, first, cap, rounds):
    node = reference_node
    rooms = rooms_of(sizes)
    warmup = [{"rid": "warmup", "room": 0, "tokens": 8, "fake": True}]  # SGLang's warm-up request
    encoder = Encoder(node, tmp_path, warmup + plan_of(rooms, at_s=0.2), tp=tp)
    clients = language(node, ranks)
    try:
        for (room, tokens), want_rounds in zip(rooms, rounds):
            for result in receive(clients, room, free_lists(ranks, DEST_BLOCKS, room), first, cap):
                assert result.rounds == want_rounds
                assert_every_byte(result, room, tokens)
        assert encoder.wait() == 0, encoder.output()
        for rank in range(tp):
            outcomes = encoder.outcomes(rank)
            assert {rid: o["outcome"] for rid, o in outcomes.items()} == \
                {"warmup": "Success", **{f"req-{room}": "Success" for room, _ in rooms}}
        for room, _ in rooms:  # one copy per room and destination, whatever the encoder's TP
            assert node.store.room(room)["round"] == str(rounds[rooms.index((room, _))])
        assert wait_for(lambda: pool_full(node), 5), "every block back in the pool"
    finally:
        close(clients)
        if encoder.process.poll() is None:
            encoder.kill()


def test_deepstack_encoder_tp2(deepstack_node, tmp_path):
    node, [(room, tokens)] = deepstack_node, rooms_of([3000])
    encoder = Encoder(node, tmp_path, plan_of([(room, tokens)]), tp=2, deepstack=2)
    clients = language(node, 2, deepstack=2)
    try:
        for result in receive(clients, room, free_lists(2, DEST_BLOCKS, room), 1024, 1024):
            assert result.rounds == 3
            assert_every_byte(result, room, tokens, deepstack=2)
        assert encoder.wait() == 0, encoder.output()
        assert wait_for(lambda: pool_full(node), 5)
    finally:
        close(clients)


def _gate(rank: ReferenceRank, gate) -> None:
    """Hold the rank's resumes until ``gate`` is set (a language side slow to make room)."""
    resume = rank.resume

    def held(*args, **kwargs):
        gate.wait(30)
        resume(*args, **kwargs)
    rank.resume = held


def test_encoder_killed_mid_room(reference_node, tmp_path):
    """kill -9 of the encoder: a room it had published finishes from the node's pool; one
    whose embeddings it was still computing fails with the reason, the language side told;
    every block comes back; a new encoder process works at once."""
    import threading
    node = reference_node
    (published, tokens), (computing, small) = rooms_of([2000, 500])
    encoder = Encoder(node, tmp_path, plan_of([(published, tokens)])
                      + plan_of([(computing, small)], at_s=0.5, compute_s=60))
    clients = language(node, 1)
    gate, results = threading.Event(), {}
    _gate(clients[0], gate)

    def run(room, first):
        results[room] = receive(clients, room, free_lists(1, DEST_BLOCKS, room), first, 1024)[0]
    threads = [threading.Thread(target=run, args=(published, 1024)),
               threading.Thread(target=run, args=(computing, 512))]
    try:
        for thread in threads:
            thread.start()
        assert wait_for(lambda: node.store.room(published).get("status_name") == "Transferring", 20)
        request = node.store.keys.request(f"req-{computing}")
        assert wait_for(lambda: node.store.client.hget(request, "room") is not None, 20), encoder.output()
        encoder.kill()
        gate.set()
        for thread in threads:
            thread.join(30)
        assert_every_byte(results[published], published, tokens)
        assert results[computing].status == FAILED
        assert "the encoder stopped" in node.store.room(computing)["failure"]
        assert wait_for(lambda: pool_full(node), 5), "the killed encoder's blocks came back"

        [(fresh, size)] = rooms_of([1500])
        again = Encoder(node, tmp_path, plan_of([(fresh, size)]))
        assert_every_byte(receive(clients, fresh, free_lists(1, DEST_BLOCKS, fresh), 1024, 1024)[0], fresh, size)
        assert again.wait() == 0, again.output()
    finally:
        gate.set()
        close(clients)
        if encoder.process.poll() is None:
            encoder.kill()


def test_encoder_aborts_end_rooms_and_tell_the_language_side(reference_node, tmp_path):
    import threading
    node = reference_node
    (waiting, t1), (inflight, t2) = rooms_of([600, 2000])
    encoder = Encoder(node, tmp_path, plan_of([(waiting, t1)], abort_at_s=0.3)
                      + plan_of([(inflight, t2)], abort_at_s=3.0))
    clients = language(node, 1)
    gate, results = threading.Event(), {}
    _gate(clients[0], gate)
    try:
        thread = threading.Thread(target=lambda: results.update(
            r=receive(clients, inflight, free_lists(1, DEST_BLOCKS, inflight), 1024, 1024)[0]))
        thread.start()
        assert encoder.wait() == 0, encoder.output()
        gate.set()
        thread.join(30)
        assert results["r"].status == FAILED
        # the room aborted before its language side came: that side learns at its init
        assert receive(clients, waiting, free_lists(1, DEST_BLOCKS, waiting), 1024, 1024)[0].status == FAILED
        outcomes = encoder.outcomes()
        for room in (waiting, inflight):
            assert outcomes[f"req-{room}"]["outcome"] == "Failed"
            assert "aborted by the encoder" in outcomes[f"req-{room}"]["error"]
            assert "aborted by the encoder" in node.store.room(room)["failure"]
        assert wait_for(lambda: pool_full(node), 5)
    finally:
        gate.set()
        close(clients)


def one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("xferd sglang-encoder: ")]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_layout_mismatch_is_one_line_and_exit_2(reference_node, tmp_path):
    encoder = Encoder(reference_node, tmp_path, plan_of(rooms_of([100])), block_size=256)
    assert encoder.wait(60) == 2
    assert "block size 256" in one_line_error(encoder.output())


def routed(bootstrap: str) -> bool:
    """Whether the encoder's rank 0 is in the bootstrap's route table yet."""
    try:
        return http_get(f"http://{bootstrap}/route?engine_rank=0&target_dp_group=0")[0] == 200
    except OSError:
        return False


def test_switch_off_runs_sglang_as_it_ships(reference_node, tmp_path):
    """Without the launcher SGLang's own classes run: the stand-in's in-process design (its
    own bootstrap server, Mooncake engine and transfer threads) moves the rooms, resumes and
    two language ranks included, and touches nothing of the node's."""
    node, port = reference_node, free_port()
    rooms = rooms_of([2000, 700])
    encoder = Encoder(node, tmp_path, plan_of(rooms), wrap=False, bootstrap_port=port)
    clients = []
    try:
        assert wait_for(lambda: routed(f"127.0.0.1:{port}"), 30), encoder.output()
        clients = [ReferenceRank(f"127.0.0.1:{port}", ReferenceBuffers(DEST_BLOCKS, BLOCK, HIDDEN),
                                 engine_rank=r, tp_size=2) for r in range(2)]
        for (room, tokens), rounds in zip(rooms, [3, 1]):
            for result in receive(clients, room, free_lists(2, DEST_BLOCKS, room), 768, 1024):
                assert result.rounds == rounds
                assert_every_byte(result, room, tokens)
        assert encoder.wait() == 0, encoder.output()
        assert {rid: o["outcome"] for rid, o in encoder.outcomes().items()} == \
            {f"req-{room}": "Success" for room, _ in rooms}
        assert all(not node.store.room(room) for room, _ in rooms), "xferd saw none of it"
    finally:
        close(clients)
        if encoder.process.poll() is None:
            encoder.kill()


@pytest.mark.parametrize("case", ["redis down", "no node", "not encode"])
def test_launcher_refuses_with_one_line(redis_url, case):
    env = dict(os.environ, XFERD_REDIS_URL=redis_url, XFERD_PREFIX=f"xt{uuid.uuid4().hex[:8]}")
    mode = "encode"
    if case == "redis down":
        env["XFERD_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}"
    elif case == "not encode":
        mode = "language"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "xferd", "sglang-encoder", "--", sys.executable, "-c", "pass",
                           "--disaggregation-mode", mode], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    line = one_line_error(done.stderr)
    assert {"redis down": "does not answer", "no node": "has no pool record",
            "not encode": "encode mode only"}[case] in line
    assert time.monotonic() - started < 20


HOOK_CHECK = """
import sys, json
sys.path.insert(0, {standin!r})
{install}
import sglang.srt.disaggregation.utils as utils
from sglang.srt.disaggregation.mooncake import conn_multimodal as conn
from sglang.srt.disaggregation.utils import DisaggregationMode
names = ["MultimodalDataBuffers", "ReqToMetadataBlockAllocator"]
out = {{"utils": [getattr(utils, n).__module__ for n in names],
        "conn": [getattr(conn, n).__module__ for n in ("MooncakeEmbeddingManager", "MooncakeEmbeddingSender",
                                                       "MooncakeEmbeddingBootstrapServer", "MooncakeEmbeddingReceiver")],
        "originals": hasattr(utils, "XFERD_ORIGINALS")}}
if hasattr(utils, "XFERD_ORIGINALS"):
    from xferd.sglang_encoder import hook
    hook.install(); hook.apply(utils)  # again: nothing changes
    out["same"] = utils.MultimodalDataBuffers.__mro__[1] is utils.XFERD_ORIGINALS["MultimodalDataBuffers"]
    manager = conn.MooncakeEmbeddingManager(None, DisaggregationMode.LANGUAGE, None)
    out["language_manager"] = type(manager).__module__
print(json.dumps(out))
"""


@pytest.mark.parametrize("on", [False, True])
def test_the_hook_swaps_only_the_encoder_classes(on):
    install = "from xferd.sglang_encoder.hook import install; install()" if on else ""
    done = subprocess.run([sys.executable, "-c", HOOK_CHECK.format(standin=STANDIN, install=install)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    xferd_or_sglang = "xferd.sglang_encoder" if on else "sglang"
    assert all(m.startswith(xferd_or_sglang) for m in out["utils"])
    assert all(m.startswith(xferd_or_sglang) for m in out["conn"][:3])
    assert out["conn"][3].startswith("sglang"), "the language side's receiver is never replaced"
    assert out["originals"] is on
    if on:
        assert out["same"] and out["language_manager"].startswith("sglang"), "language mode: SGLang's own"
