"""Terminal views of a node: `xferd status`, `xferd rooms`, `xferd top` (rich tables)."""
from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from xferd.state.connections import TRANSIENT
from xferd.ops.nodeview import FAILURE_COLUMNS, ROOM_COLUMNS, WORKER_COLUMNS, NodeView, read
from xferd.state.store import Store


def _table(title: str, columns: list[str] | None, rows: list[list[str]], bad=lambda row: False) -> Table:
    table = Table(title=title, title_justify="left", show_header=columns is not None)
    for column in columns or ["", ""]:
        table.add_column(column)
    for row in rows:
        table.add_row(*row, style="red" if bad(row) else "")
    return table


def header(view: NodeView, where: str) -> Text:
    return Text(f"node {view.node!r}, prefix {view.prefix!r}, redis {where}")


def status_view(view: NodeView, where: str) -> Group:
    return Group(header(view, where), _table("node", None, view.summary_rows()),
                 _table(f"workers ({len(view.workers)} lanes)", WORKER_COLUMNS, view.worker_rows(),
                        lambda row: row[2] != "running"),
                 _table(f"live rooms (oldest {len(view.live_rooms)})", ROOM_COLUMNS, view.room_rows()),
                 _table("recent failures", FAILURE_COLUMNS, view.failure_rows(), lambda row: True))


def print_status(store: Store, where: str, console: Console | None = None) -> None:
    (console or Console()).print(status_view(read(store), where))


def print_rooms(store: Store, where: str, status: str | None, limit: int, console: Console | None = None) -> None:
    view = read(store, status=status, room_limit=limit)
    title = f"{'live' if status is None else status} rooms ({len(view.live_rooms)} shown, oldest first)"
    console = console or Console()
    console.print(header(view, where))
    console.print(_table(title, ROOM_COLUMNS, view.room_rows()))


def top(store: Store, where: str, interval: float = 1.0) -> None:
    """The status view, read again every ``interval`` seconds until Ctrl-C. A Redis that stops
    answering after the start is shown as such (with how long) and watched until it is back:
    the outage is when an operator looks."""
    down_since = None
    with Live(status_view(read(store), where), auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                try:
                    view = status_view(read(store), where)
                    down_since = None
                except TRANSIENT as error:
                    down_since = down_since or time.monotonic()
                    view = Text(f"redis {where} does not answer for {time.monotonic() - down_since:.0f} s "
                                f"({type(error).__name__}: {error}); still trying", style="bold red")
                live.update(view, refresh=True)
        except KeyboardInterrupt:
            pass
