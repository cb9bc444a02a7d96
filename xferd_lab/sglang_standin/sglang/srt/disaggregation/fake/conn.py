"""Stand-in of SGLang's fake transfer (warm-up requests): nothing moves, Success after send."""
from sglang.srt.disaggregation.base import KVPoll


class FakeKVSender:
    def __init__(self, mgr=None, bootstrap_addr=None, bootstrap_room=None, dest_tp_ranks=None, pp_rank=0):
        self.has_sent = False

    def poll(self):
        return KVPoll.Success if self.has_sent else KVPoll.WaitingForInput

    def init(self, embedding_indices=None, **kwargs):
        pass

    def send(self, *args, **kwargs):
        self.has_sent = True

    def send_embedding(self, *args, **kwargs):
        self.has_sent = True

    def failure_exception(self):
        raise Exception("Fake KVSender Exception")


class FakeKVReceiver:
    def __init__(self, *args, **kwargs):
        self.has_init = False

    def poll(self):
        return KVPoll.Success if self.has_init else KVPoll.WaitingForInput

    def init(self, *args, **kwargs):
        self.has_init = True

    def failure_exception(self):
        raise Exception("Fake KVReceiver Exception")
