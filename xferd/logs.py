"""Logging set-up shared by every xferd process."""
from __future__ import annotations

import logging
import os


def setup(name: str, level: str | None = None) -> logging.Logger:
    level = level or os.environ.get("XFERD_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level.upper(),
                        format=f"%(asctime)s {name}[%(process)d] %(levelname)s %(message)s")
    return logging.getLogger("xferd")
