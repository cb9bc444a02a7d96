"""Swap SGLang's encoder-side classes for xferd's as SGLang imports them.

A meta-path finder wraps the loader of two modules: once SGLang's own code has run,
``sglang.srt.disaggregation.utils`` gets xferd's MultimodalDataBuffers and
ReqToMetadataBlockAllocator, and ``sglang.srt.disaggregation.mooncake.conn_multimodal``
xferd's encode-mode manager, sender and bootstrap server. Everything else SGLang imports is
untouched, and so are those modules' other names. The originals stay reachable as
``module.XFERD_ORIGINALS``. Patching at import time (rather than wrapping the scheduler)
keeps ``from ... import MultimodalDataBuffers`` in SGLang's scheduler correct: it binds the
name after the module ran, so it binds xferd's class.
"""
from __future__ import annotations

import importlib.abc
import sys
from typing import Callable

UTILS = "sglang.srt.disaggregation.utils"
CONN = "sglang.srt.disaggregation.mooncake.conn_multimodal"


def patch_utils(module) -> dict[str, type]:
    from xferd.sglang_encoder.allocator import allocator_class
    from xferd.sglang_encoder.buffers import buffers_class
    return {"MultimodalDataBuffers": buffers_class(module.MultimodalDataBuffers),
            "ReqToMetadataBlockAllocator": allocator_class(module.ReqToMetadataBlockAllocator)}


def patch_conn(module) -> dict[str, type]:
    from xferd.sglang_encoder.manager import encoder_classes
    return encoder_classes(module)


PATCHES: dict[str, Callable] = {UTILS: patch_utils, CONN: patch_conn}


def apply(module) -> None:
    """Replace the module's classes (once), keeping the originals beside them."""
    if hasattr(module, "XFERD_ORIGINALS"):
        return
    replacements = PATCHES[module.__name__](module)
    module.XFERD_ORIGINALS = {name: getattr(module, name) for name in replacements}
    for name, cls in replacements.items():
        setattr(module, name, cls)


class _PatchingLoader(importlib.abc.Loader):
    """The module's own loader, then ``apply``; everything else asked of it goes to the original."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        apply(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class PatchingFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Idempotent; modules SGLang imported already are patched at once."""
    if not any(isinstance(f, PatchingFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, PatchingFinder())
    for name in PATCHES:
        if name in sys.modules:
            apply(sys.modules[name])
