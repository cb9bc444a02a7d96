"""The path of one resume, traced: the modules and Lua scripts a resume's handling crosses,
from the ingress taking the frames to the worker pushing the round's status. A module that
joins the path has to be added here, on purpose (docs/architecture.md walks the same path)."""
from __future__ import annotations

import pathlib
import sys
import threading

import pytest
import torch

from xferd.client.receiver import Receiver
from xferd.client.sender import Sender
from xferd.node.ingress import Ingress
from xferd.protocol.status import Status
from xferd.state.node_record import node_record
from xferd_lab.embedded import free_port

PACKAGE = str(pathlib.Path(__file__).resolve().parents[1] / "xferd") + "/"
# the resume's own steps, then the Store's machinery every call passes through
INGRESS_PATH = {"node/ingress.py", "protocol/wire.py", "protocol/planning.py", "protocol/layout.py",
                "state/rooms.py",
                "state/store.py", "state/keys.py", "state/records.py", "state/retry.py", "state/connections.py",
                "settings.py"}
WORKER_PATH = {"node/worker.py", "state/work.py", "protocol/planning.py", "protocol/layout.py", "node/lease.py",
               "transfer/engine.py", "node/notify.py", "protocol/wire.py", "node/faults.py",
               "state/store.py", "state/keys.py", "state/records.py", "state/retry.py", "state/connections.py"}


class Trace:
    """The xferd modules whose functions run, and the scripts run, on any thread meanwhile."""

    def __init__(self):
        self.modules: set[str] = set()
        self.scripts: list[str] = []

    def _profile(self, frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(PACKAGE):
            self.modules.add(frame.f_code.co_filename[len(PACKAGE):])
            if frame.f_code.co_name == "_run_raw":
                self.scripts.append(frame.f_locals["name"])

    def __enter__(self):
        sys.setprofile(self._profile)
        threading.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)
        threading.setprofile(None)


@pytest.mark.integration
def test_a_resume_crosses_these_modules_and_three_scripts(lone_worker):
    store, worker = lone_worker
    settings = worker.settings.replace(ingress=f"tcp://127.0.0.1:{free_port()}")
    store.init_pool(16, node_record(settings))
    ingress = Ingress(settings)
    receiver = Receiver(settings.ingress, settings.buffer_layout, num_blocks=16)
    receiver._send = lambda frames: ingress.handle([bytes(f) for f in frames])  # the ingress, in this process
    try:
        receiver.register()
        total, block = 3 * settings.block_size, settings.block_size
        data = {"embeddings": torch.ones(total, settings.hidden_size, dtype=torch.bfloat16),
                "token_ids": torch.arange(total, dtype=torch.int32),
                "mrope_positions": torch.zeros(3, total, dtype=torch.int32), "aux": [total, 0]}
        receiver.init(1, [0, 1], 2 * block)
        Sender(settings, store).send(1, total, data)
        worker.process(worker.once.read_rounds(worker.consumer, 1, 1000)[0])
        assert store.status(1) == Status.Transferring
        with Trace() as at_ingress:
            receiver.resume(1, [2], 2 * block, block)
        with Trace() as at_worker:
            worker.process(worker.once.read_rounds(worker.consumer, 1, 1000)[0])
        assert store.status(1) == Status.Success
        at_ingress.modules.discard("client/receiver.py")  # the language side's own
        assert at_ingress.scripts + at_worker.scripts == ["dst_resume", "begin_round", "commit_round"]
        assert at_ingress.modules == INGRESS_PATH, at_ingress.modules ^ INGRESS_PATH
        assert at_worker.modules == WORKER_PATH, at_worker.modules ^ WORKER_PATH
    finally:
        receiver.close()
        ingress.close()
