"""Runs at the start of every Python process started under `xferd sglang-encoder` (this
folder is on its PYTHONPATH): installs xferd's import hook, then runs the sitecustomize this
one stands in front of, if there is one."""
import importlib.machinery
import importlib.util
import os
import sys

if os.environ.get("XFERD_SGLANG_ENCODER") == "1":
    from xferd.sglang_encoder.hook import install

    install()

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here])
if _spec is not None and _spec.loader is not None:
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["sitecustomize"] = _module
    _spec.loader.exec_module(_module)
