"""Stand-in of SGLang's multimodal Mooncake connector: its names, its error type, and
classes that refuse to run (the stand-in moves no data itself; under `xferd sglang-encoder`
the encode-mode classes are xferd's)."""


class EmbeddingTransferError(Exception):
    def __init__(self, bootstrap_room: int, failure_reason: str):
        super().__init__(failure_reason)
        self.bootstrap_room = bootstrap_room
        self.failure_reason = failure_reason

    def __str__(self):
        return f"EmbeddingTransferError(bootstrap_room={self.bootstrap_room}): {self.failure_reason}"


class _NotHere:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__}: the SGLang stand-in has no Mooncake transfer "
                           "(run it under `xferd sglang-encoder`)")


class MooncakeEmbeddingManager(_NotHere):
    def __init__(self, args, disaggregation_mode, server_args, *rest, **options):
        self.data_args, self.disaggregation_mode, self.server_args = args, disaggregation_mode, server_args
        if getattr(disaggregation_mode, "value", disaggregation_mode) == "encode":
            super().__init__()


class MooncakeEmbeddingSender(_NotHere):
    pass


class MooncakeEmbeddingReceiver(_NotHere):
    pass


class MooncakeEmbeddingBootstrapServer(_NotHere):
    pass
