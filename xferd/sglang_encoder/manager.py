"""The encoder-side classes SGLang's ``get_kv_class(MOONCAKE, ..., is_multimodal=True)``
returns with the switch on: manager, sender and bootstrap server, on the xferd node.

The manager starts no Mooncake engine, no transfer threads and no bootstrap registration:
the node's workers write, and ``xferd serve --bootstrap`` answers the language side's
``/route`` and ``/health``. A sender publishes its room (``send_embedding``) and reads its
status from Redis (``poll``); its failures carry xferd's reason in SGLang's own error type.
In the language mode the manager is SGLang's own.
"""
from __future__ import annotations

import logging
import os
import time
import urllib.request

from xferd.protocol.status import Status
from xferd.sglang_encoder.node import EncoderNode, fatal

log = logging.getLogger("xferd.sglang_encoder")
DEFAULT_BOOTSTRAP_TIMEOUT_S = 30  # SGLang's SGLANG_DISAGGREGATION_BOOTSTRAP_TIMEOUT default


def encoder_classes(module) -> dict[str, type]:
    """The replacements for ``module`` (SGLang's ``conn_multimodal``), by attribute name."""
    original_manager = module.MooncakeEmbeddingManager
    error_type = module.EmbeddingTransferError

    class XferdEmbeddingManager(original_manager):
        """The encoder's manager: the node's handle, no engine, no threads of its own."""

        def __new__(cls, args, disaggregation_mode, server_args, *rest, **options):
            if getattr(disaggregation_mode, "value", disaggregation_mode) != "encode":
                return original_manager(args, disaggregation_mode, server_args, *rest, **options)
            return object.__new__(cls)

        def __init__(self, args, disaggregation_mode, server_args, *rest, **options):
            self.data_args, self.disaggregation_mode = args, disaggregation_mode
            self.node = EncoderNode.get()
            self.node.engine_rank = int(getattr(args, "engine_rank", 0) or 0)
            self.node.tp_size = int(getattr(server_args, "tp_size", 1) or 1)
            self.bootstrap_port = getattr(server_args, "disaggregation_bootstrap_port", None)
            self.bootstrap_time_out = int(os.environ.get("SGLANG_DISAGGREGATION_BOOTSTRAP_TIMEOUT",
                                                         DEFAULT_BOOTSTRAP_TIMEOUT_S))
            pool = [view.data_ptr() for view in self.node.sender.pool.buffers]
            if list(getattr(args, "aux_data_ptrs", []) or []) != pool:
                fatal("the scheduler's MultimodalDataBuffers are not the node's source pool (was "
                      "sglang.srt.disaggregation.utils imported before the switch took effect?)")
            log.info("encoder rank %d of %d on xferd node %s (%s): %d source blocks shared with its workers",
                     self.node.engine_rank, self.node.tp_size, self.node.settings.node,
                     self.node.sender.layout.describe(), self.node.sender.pool.num_blocks)

        def get_session_id(self):
            return None  # the encoder holds no Mooncake session: the node's workers write

    class XferdEmbeddingSender:
        """One room of the encoder: publish, poll, abort, as SGLang's sender is called."""

        def __init__(self, mgr, bootstrap_addr: str, bootstrap_room: int, dest_tp_ranks=None, pp_rank: int = 0):
            self.embedding_mgr, self.node = mgr, mgr.node
            self.bootstrap_server_url, self.bootstrap_room = bootstrap_addr, int(bootstrap_room)
            self.dest_tp_ranks, self.pp_rank = dest_tp_ranks, pp_rank
            self.embedding_indices, self.conclude_state, self.init_time = None, None, None
            self.created = time.monotonic()
            self.failure_reason: str | None = None
            self._binding = None  # the bind begun at init, until waited for
            self.node.watch(self.bootstrap_room)

        def init(self, embedding_indices=None) -> None:
            self.embedding_indices = list(embedding_indices or [])
            self.init_time = time.time()
            try:
                self._binding = self.node.bind(self.embedding_indices, self.bootstrap_room)
            except ValueError as error:
                self._fail(f"cannot take its source blocks: {error}")

        def _bind_error(self) -> BaseException | None:
            """Wait for the bind begun at ``init`` (once): its error, or None."""
            binding, self._binding = self._binding, None
            return None if binding is None else binding.exception()

        def _bound(self) -> bool:
            """Whether the room holds its blocks; a room that could not take them fails."""
            error = self._bind_error()
            if error is not None:
                self._fail(f"cannot take its source blocks: {type(error).__name__}: {error}")
            return self.conclude_state is None

        def send(self, kv_indices=None, *rest) -> None:
            pass  # embeddings go once, at send_embedding

        def may_write(self) -> bool:
            """Whether this rank writes the request's data now (set_buf asks)."""
            if not self._bound() or not self.node.writes:
                return False
            if self.node.may_write(str(self.bootstrap_room)):
                return True
            self._fail("the encoder lost its source blocks' lease before writing them (Redis out of reach, "
                       "or the process paused, longer than the lease); nothing was written")
            return False

        def send_embedding(self, embedding_indices=None, last_chunk: bool = True, total_tokens: int | None = None,
                           block_size: int | None = None) -> None:
            if not self._bound() or not self.node.writes:
                self.node.let_go(str(self.bootstrap_room))  # rank 0 publishes; the others poll the same room
                return
            blocks = list(embedding_indices if embedding_indices is not None else self.embedding_indices or [])
            if not self.node.may_write(str(self.bootstrap_room)):
                self._fail("the encoder lost its source blocks' lease before publishing them")
                return
            self.node.let_go(str(self.bootstrap_room))  # publishing ends the lease: no renewal may see it gone

            def publish() -> None:  # in the background, as SGLang's send only queues the transfer
                try:
                    outcome = self.node.sender.publish(self.bootstrap_room, blocks, int(total_tokens))
                except (ValueError, TypeError) as error:
                    self._fail(f"bad publish: {error}")
                    return
                if outcome.notify:
                    self.node.sender.notifier.send(outcome.endpoints, self.bootstrap_room, outcome.status)
            self.node.background.submit(publish, f"publishing room {self.bootstrap_room}")

        def poll(self):
            if self.conclude_state is not None:
                return self.conclude_state
            status, failure = self.node.status(self.bootstrap_room)
            if status in (Status.Success, Status.Failed):
                self.conclude_state, self.failure_reason = status, failure
                return status
            if status in (None, Status.Bootstrapping):
                if self.init_time is not None:
                    return Status.WaitingForInput  # SGLang drops a request whose sender goes back to Bootstrapping
                elapsed = time.monotonic() - self.created
                if elapsed >= self.embedding_mgr.bootstrap_time_out:
                    self._fail(f"Request {self.bootstrap_room} timed out after {elapsed:.1f}s in "
                               "KVPoll.Bootstrapping")
                    return Status.Failed
                return Status.Bootstrapping
            return status

        def _fail(self, reason: str) -> None:
            """End the room in xferd (the language side is told) and here."""
            self._bind_error()  # the room's lease is let go of once it is held
            self.node.let_go(str(self.bootstrap_room))  # no more writes into its blocks from here
            self.failure_reason = self.failure_reason or reason
            self.conclude_state = Status.Failed
            try:
                self.node.sender.abort(self.bootstrap_room, reason)
            except Exception as error:  # noqa: BLE001 - Redis away: the room's own deadline fails it
                log.error("room %d: could not fail it in Redis (%s): %s", self.bootstrap_room, error, reason)

        def abort(self) -> None:
            if self.conclude_state is None:
                self._fail("aborted by the encoder (the request was aborted)")

        def clear(self) -> None:
            """The scheduler is done with the room: a live one ends now (Failed, pushed)."""
            if self.conclude_state is None:
                status, _ = self.node.status(self.bootstrap_room)
                if status not in (Status.Success, Status.Failed):
                    self._fail("dropped by the encoder before it ended")
            self.node.forget(self.bootstrap_room)

        def failure_exception(self):
            if self.conclude_state is None or self.conclude_state == Status.Success:
                self._fail("failed on another encoder rank")  # SGLang: the ranks' polls were reduced to Failed
            reason = self.failure_reason or self.node.store.failure(self.bootstrap_room) or \
                "Failed due to an unknown reason from another rank"
            self.clear()
            raise error_type(self.bootstrap_room, reason)

    class XferdBootstrapServer:
        """Stands where SGLang would start its own bootstrap server: `xferd serve --bootstrap`
        answers the language side, so none is started; says so if nothing answers there."""

        def __init__(self, host: str | None = None, port: int | None = None, *rest, **options):
            self.host, self.port = host, port
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            except Exception as error:  # noqa: BLE001 - a warning, not a refusal: serve may start later
                log.warning("nothing answers the language side's bootstrap on port %s (%s): run `xferd serve "
                            "--bootstrap HOST:%s` for this node", port, error, port)

        def run(self) -> None:
            pass

        def close(self) -> None:
            pass

        def poll(self):
            return None

    return {"MooncakeEmbeddingManager": XferdEmbeddingManager, "MooncakeEmbeddingSender": XferdEmbeddingSender,
            "MooncakeEmbeddingBootstrapServer": XferdBootstrapServer}
