"""What a node installs: the serving processes import neither torch nor the tooling's
libraries (fakeredis, matplotlib), and the package's dependencies say so."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_serving_imports_no_torch_fakeredis_or_plotting():
    code = ("import sys, xferd.cli, xferd.node.serve, xferd.node.worker, xferd.node.ingress, xferd.node.janitor, "
            "xferd.ops.monitor, xferd.ops.console, xferd.ops.operate; "
            "print(sorted(m for m in ('torch', 'numpy', 'fakeredis', 'matplotlib', 'xferd_lab') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_dependencies_of_a_node_leave_the_tooling_to_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = " ".join(project["dependencies"])
    for name in ("torch", "numpy", "fakeredis", "matplotlib", "mooncake"):
        assert name not in required, name
    extras = project["optional-dependencies"]
    assert any("mooncake-transfer-engine-non-cuda" in r for r in extras["cpu"])
    assert any(r.startswith("torch") for r in extras["torch"])
    assert any(r.startswith("fakeredis") for r in extras["demo"])


def test_every_flag_of_every_command_has_help_text():
    from xferd.cli import build_parser

    parser = build_parser()
    missing = [(name, a.option_strings or a.dest) for action in parser._subparsers._group_actions
               for name, sub in action.choices.items() for a in sub._actions if a.help is None]
    assert missing == []
