"""Stand-in of the parts of SGLang's schedule_batch the encoder's disaggregation code uses."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace


class FINISH_LENGTH:
    def __init__(self, length: int):
        self.length = length


class FINISH_ABORT:
    def __init__(self, message: str, status_code=None):
        self.message, self.status_code = message, status_code


@dataclass
class MultimodalInputs:
    mrope_positions: object = None  # (3, T) int
    mrope_position_delta: object = None  # (1, 1)


@dataclass
class Req:
    rid: str
    origin_input_ids: list
    bootstrap_host: str
    bootstrap_room: int
    multimodal_inputs: MultimodalInputs | None = None
    return_logprob: bool = False
    disagg_embedding_sender: object = None
    embedding_indices: list | None = None
    embedding: object = None
    finished_reason: object = None
    is_retracted: bool = False
    is_chunked: int = 0
    output_ids: list = field(default_factory=list)

    @property
    def fill_ids(self) -> list:
        return self.origin_input_ids

    @property
    def extend_input_len(self) -> int:
        return len(self.origin_input_ids)


@dataclass
class ScheduleBatch:
    reqs: list
    output_ids: object = None
    forward_mode: object = field(default_factory=lambda: SimpleNamespace(is_extend=lambda: True))

    def filter_batch(self, **kwargs):
        pass


_server_args = SimpleNamespace(max_micro_batch_size=8)


def get_global_server_args():
    return _server_args
