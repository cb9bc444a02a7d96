"""Logging set-up shared by every xferd process: ``text`` (one readable line) or ``json``
(one object a line, for a log pipeline; python-json-logger), at ``log_level``. Every line
names the role and the node; the room-end lines (``ended_line``) carry their fields as
JSON keys too."""
from __future__ import annotations

import logging

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")


def setup(role: str, level: str = "INFO", form: str = "text", node: str = "") -> logging.Logger:
    handler = logging.StreamHandler()
    if form == "json":
        try:
            from pythonjsonlogger.json import JsonFormatter
        except ImportError:  # python-json-logger before 3.1
            from pythonjsonlogger.jsonlogger import JsonFormatter
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"levelname": "level", "asctime": "time"},
                                           static_fields={"role": role, "node": node}))
    else:
        where = f"{role}[%(process)d]" + (f" {node}" if node else "")
        handler.setFormatter(logging.Formatter(f"%(asctime)s {where} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return logging.getLogger("xferd")
