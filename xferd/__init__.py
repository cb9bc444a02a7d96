"""xferd: Redis-coordinated transfer of multimodal embeddings for EPD disaggregated serving."""
from xferd.protocol.layout import BufferType, Layout, parse_layout, reference_layout
from xferd.settings import Settings
from xferd.protocol.status import Status

__all__ = ["BufferType", "Layout", "Receiver", "Sender", "Settings", "Status", "parse_layout", "reference_layout"]
__version__ = "0.1.0"


def __getattr__(name):  # Sender/Receiver pull in torch and Mooncake: import them on demand
    if name == "Sender":
        from xferd.client.sender import Sender
        return Sender
    if name == "Receiver":
        from xferd.client.receiver import Receiver
        return Receiver
    raise AttributeError(name)
