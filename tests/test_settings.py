"""Settings: what the operator sets, and one clear line when it cannot work."""
from __future__ import annotations

import subprocess
import sys

import pytest

from xferd.settings import ConfigError, Settings


def test_layout_and_wire_options_from_the_environment():
    settings = Settings.from_env({"XFERD_LAYOUT": "deepstack:2", "XFERD_STATUS_FRAMES": "3",
                                  "XFERD_DST_POOL_BLOCKS": "64", "XFERD_BOOTSTRAP": "0.0.0.0:8998"})
    assert [b.name for b in settings.buffer_layout.buffers][-1] == "deepstack_embeddings"
    assert (settings.status_frames, settings.dst_pool_blocks, settings.bootstrap) == (3, 64, "0.0.0.0:8998")


@pytest.mark.parametrize("environ,needle", [
    ({"XFERD_WORKERS": "two"}, "XFERD_WORKERS='two' is not a valid int"),
    ({"XFERD_STRICT_BOUNDS": "maybe"}, "is not a boolean"),
    ({"XFERD_LAYOUT": "deepstack"}, "layout: layout 'deepstack' is not one of"),
    ({"XFERD_STATUS_FRAMES": "4"}, "status_frames must be 2"),
    ({"XFERD_BOOTSTRAP": "8998"}, "bootstrap '8998' is not HOST:PORT"),
    ({"XFERD_DST_POOL_BLOCKS": "-1"}, "dst_pool_blocks must be"),
    ({"XFERD_MIN_REPLICAS": "-1"}, "min_replicas must be at least 0, got -1"),
    ({"XFERD_REPLICA_TIMEOUT": "0"}, "replica_timeout must be positive"),
    ({"XFERD_REDIS_URL": "http://r:6379"}, "redis_url: unsupported Redis URL 'http://r:6379'"),
])
def test_a_setting_that_cannot_work_says_which(environ, needle):
    with pytest.raises(ConfigError, match=needle):
        Settings.from_env(environ)


def test_the_ingress_is_advertised_where_the_language_side_reaches_it():
    assert Settings(ingress="tcp://10.0.0.5:17500").advertised_ingress() == ("10.0.0.5", 17500)
    assert Settings(ingress="tcp://*:17501", hostname="10.0.0.6").advertised_ingress() == ("10.0.0.6", 17501)


def test_the_cli_exits_with_one_line():
    done = subprocess.run([sys.executable, "-m", "xferd", "serve", "--layout", "vision=3/pixels"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "xferd: layout: layout entry 'vision=3/pixels' is not name=N/UNIT or name=CxN/token "
        "(UNIT: token, block or first)"]


def _configuration_rows():
    """(field names, default texts) of each row of docs/configuration.md's settings table."""
    import pathlib
    import re

    page = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3:
            yield re.findall(r"`([a-z_]+)`", cells[0]), [d.strip() for d in cells[1].split(", ")]


def test_the_docs_configuration_table_is_settings():
    """Every field of Settings is in the table, nothing else is, and every default the table
    states as a number or a literal is the field's."""
    import dataclasses

    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    named = [name for names, _ in _configuration_rows() for name in names]
    assert sorted(named) == sorted(fields), set(named) ^ set(fields)
    checked = 0
    for names, defaults in _configuration_rows():
        for name, text in zip(names, defaults) if len(names) == len(defaults) else ():
            value = fields[name]
            number = text.removesuffix(" s")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and number.replace(".", "").isdigit():
                assert float(number) == value, (name, text)
                checked += 1
            elif isinstance(value, str) and text.startswith("`") and text.endswith("`"):
                assert text.strip("`").strip('"') == value, (name, text)
                checked += 1
    assert checked >= 20
