from sglang.srt.disaggregation.fake.conn import FakeKVReceiver, FakeKVSender  # noqa: F401
