"""Stand-in of SGLang's disaggregation base: KVArgs and KVPoll."""


class KVPoll:
    Failed = 0
    Bootstrapping = 1
    WaitingForInput = 2
    Transferring = 3
    Success = 4


class KVArgs:
    engine_rank: int
    aux_data_ptrs: list
    aux_data_lens: list
    aux_item_lens: list
    ib_device: str
    gpu_id: int
