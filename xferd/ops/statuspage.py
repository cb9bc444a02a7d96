"""The status page at ``/`` of the node's monitor port: the node view (``nodeview.py``) as one
HTML page, rendered on the server and reloading itself every few seconds. Every text that
came from outside (room ids, failure reasons, consumer names) is escaped."""
from __future__ import annotations

from html import escape

from xferd.ops.nodeview import FAILURE_COLUMNS, ROOM_COLUMNS, WORKER_COLUMNS, NodeView

REFRESH_S = 2

STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 20px; margin-bottom: 0.2em; } h2 { font-size: 16px; margin: 1.2em 0 0.4em; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: left; }
th { background: #f3f3f3; } .bad { color: #b00020; } .muted { color: #777; }
"""


def _table(columns: list[str], rows: list[list[str]], row_class=lambda row: "") -> str:
    if not rows:
        return '<p class="muted">none</p>'
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(f'<tr class="{row_class(r)}">' + "".join(f"<td>{escape(str(v))}</td>" for v in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(view: NodeView, where: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_S}">
<title>xferd {escape(view.node)}</title><style>{STYLE}</style></head>
<body>
<h1>xferd node <span id="node">{escape(view.node)}</span></h1>
<p class="muted">prefix {escape(view.prefix)}, redis {escape(where)}; refreshes every {REFRESH_S}s;
<a href="/metrics">/metrics</a> <a href="/readyz">/readyz</a></p>
<section id="summary">{_table(["", ""], view.summary_rows())}</section>
<h2>Workers ({len(view.workers)} lanes)</h2>
<section id="workers">{_table(WORKER_COLUMNS, view.worker_rows(), lambda row: "" if row[2] == "running" else "bad")}</section>
<h2>Live rooms (oldest {len(view.live_rooms)})</h2>
<section id="rooms">{_table(ROOM_COLUMNS, view.room_rows())}</section>
<h2>Recent failures</h2>
<section id="failures">{_table(FAILURE_COLUMNS, view.failure_rows(), lambda row: "bad")}</section>
</body></html>
"""
