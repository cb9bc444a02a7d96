"""Run a script of this folder inside the project's environment, set up if needed."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ensure_venv() -> None:
    """Return when running inside .venv; else set it up and re-run this script there."""
    if os.environ.get("XFERD_SCRIPT_IN_VENV"):
        return
    subprocess.run([os.path.join(ROOT, "scripts", "setup")], check=True)
    env = dict(os.environ, XFERD_SCRIPT_IN_VENV="1")
    python = os.path.join(ROOT, ".venv", "bin", "python")
    sys.exit(subprocess.call([python, os.path.abspath(sys.argv[0]), *sys.argv[1:]], env=env))
