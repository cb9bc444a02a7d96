"""Stand-in of SGLang's Mooncake backend package: the text-KV classes, never used here."""


class _NotHere:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__}: the SGLang stand-in has no Mooncake KV transfer")


class MooncakeKVManager(_NotHere):
    pass


class MooncakeKVSender(_NotHere):
    pass


class MooncakeKVReceiver(_NotHere):
    pass


class MooncakeKVBootstrapServer(_NotHere):
    pass
