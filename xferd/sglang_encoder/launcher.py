"""`xferd sglang-encoder -- COMMAND...`: run SGLang's encoder server on this host's xferd node.

The switch is a launcher (as ``ddtrace-run`` or ``opentelemetry-instrument`` are) because
SGLang starts its schedulers as child processes: an environment that names
``xferd/sglang_encoder/boot`` on PYTHONPATH reaches every one of them, with nothing to edit
in SGLang and nothing to remember per process. Before it runs the command, the launcher
checks what would otherwise fail deep inside a scheduler child: the command runs the encode
mode, the settings parse, the node's Redis answers and the node (its record and its source
pool) exists. Any of these wrong is one line and exit status 2. Then it execs the command,
so signals and the exit status are the command's own.
"""
from __future__ import annotations

import os

from xferd.settings import ConfigError, Settings
from xferd.sglang_encoder.node import fatal, open_sender

BOOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "boot")
FLAG = "XFERD_SGLANG_ENCODER"
USAGE = "xferd sglang-encoder -- python -m sglang.launch_server ... --disaggregation-mode encode"


def disaggregation_mode(command: list[str]) -> str | None:
    """The value of --disaggregation-mode in an SGLang command line, or None."""
    for i, arg in enumerate(command):
        if arg == "--disaggregation-mode" and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith("--disaggregation-mode="):
            return arg.split("=", 1)[1]
    return None


def child_env(settings: Settings, base=os.environ) -> dict[str, str]:
    env = settings.to_env(base)
    env[FLAG] = "1"
    env["PYTHONPATH"] = os.pathsep.join([BOOT] + [p for p in base.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def preflight(settings: Settings) -> None:
    """Fatal one-line errors for a node this encoder cannot run on."""
    open_sender(settings)  # exec drops its mapping and connection


def launch(command: list[str], **overrides) -> None:
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        fatal(f"no command to run: {USAGE}")
    mode = disaggregation_mode(command)
    if mode != "encode":
        fatal(f"the command runs --disaggregation-mode {mode or 'null (the default)'}: xferd serves the "
              f"encode mode only (the language side needs no switch); {USAGE}")
    try:
        settings = Settings.from_env(**overrides)
    except ConfigError as error:
        fatal(str(error))
    preflight(settings)
    try:
        os.execvpe(command[0], command, child_env(settings))
    except OSError as error:
        fatal(f"cannot run {command[0]!r}: {error.strerror}")
