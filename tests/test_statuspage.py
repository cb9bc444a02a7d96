"""The status page at / of `xferd serve --metrics`, loaded in a real headless Chromium: it
shows the node, a live room and a failed room's reason, and reloads itself; hostile text in
a reason is shown, not run. And `xferd status` / `rooms` on the same node."""
from __future__ import annotations

import io
import shutil
import subprocess

import pytest
from rich.console import Console

from conftest import clients, start_node, wait_for
from xferd.ops import console
from xferd.protocol.status import Status
from xferd_lab.synthetic import room_data

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MARKUP = "<script>document.title='taken'</script><b>bold</b> abort"


def dom(url: str) -> str:
    """The page's DOM after Chromium loaded it."""
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--dump-dom", url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def rooms(redis_url, tmp_path_factory):
    """A node with a live room (its source never published), a room that failed as bad
    input, and one the encoder aborted with a reason carrying markup."""
    node = start_node(redis_url, tmp_path_factory, workers=1)
    with clients(node) as (sender, rx):
        live = 8_100_001
        rx.init(live, [0, 1], 256)
        failed = 8_100_002
        rx.init(failed, [2, 3], 1024)  # 2 blocks for 1024 tokens: fails with the reason
        assert rx.wait(failed, 10) == Status.Failed
        hostile = 8_100_003
        sender.send(hostile, 300, room_data(hostile, 300, sender.layout))
        sender.abort(hostile, reason=MARKUP)
        assert wait_for(lambda: node.store.status(live) == Status.WaitingForInput)
        assert node.store.status(hostile) == Status.Failed
        yield node, live, failed, hostile
    node.stop()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (scripts/test installs it)")
def test_the_page_shows_a_live_room_and_a_failed_rooms_reason_in_chromium(rooms):
    node, live, failed, hostile = rooms
    page = dom(f"http://{node.settings.metrics}/")
    assert f'<span id="node">{node.settings.node}</span>' in page
    rooms_section = page.split('<section id="rooms">')[1].split("</section>")[0]
    assert str(live) in rooms_section and "WaitingForInput" in rooms_section
    failures = page.split('<section id="failures">')[1].split("</section>")[0]
    assert str(failed) in failures and "bad_input" in failures and "1024 allocated tokens" in failures
    assert str(hostile) in failures and "aborted" in failures
    assert "&lt;script&gt;document.title='taken'&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt; abort" in failures, \
        "a reason is text, never markup"
    assert f"<title>xferd {node.settings.node}</title>" in page and "<b>" not in page
    assert '<meta http-equiv="refresh" content="2">' in page, "it reloads itself"
    workers = page.split('<section id="workers">')[1].split("</section>")[0]
    assert workers.count("running") == node.settings.rounds_per_worker


def test_xferd_status_and_rooms_show_the_same(rooms):
    node, live, failed, hostile = rooms
    out = io.StringIO()
    where = "redis (test)"
    console.print_status(node.store, where, Console(file=out, width=400))
    text = out.getvalue()
    assert f"node '{node.settings.node}', prefix '{node.settings.prefix}', redis {where}" in text
    assert str(live) in text and str(failed) in text and "1024 allocated tokens" in text and MARKUP in text
    assert "1 WaitingForInput" in text and "2 Failed" in text
    out = io.StringIO()
    console.print_rooms(node.store, where, "Failed", 10, Console(file=out, width=400))
    assert str(failed) in out.getvalue() and str(hostile) in out.getvalue() and str(live) not in out.getvalue()
