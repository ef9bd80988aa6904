"""Mission progress for the driver: a rich live view on a TTY, plain lines (no ANSI codes) otherwise."""

from __future__ import annotations

import os
import sys
from collections import deque
from typing import Any, TextIO


def drop_stdout() -> None:
    """Send what is printed from now on nowhere: the reader of stdout went away (`controlplane logs m | head`).
    Without it, even the flush at exit fails once more."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


SHOWN_STATES = ("pending", "ready", "running", "retrying", "succeeded", "failed", "skipped", "cancelled")


def event_line(event: dict[str, Any], start_s: float) -> str:
    """One event as a plain line, e.g. `[   3.2s] task draft running on writer (attempt 1)`."""
    parts = [f"[{event['time_s'] - start_s:7.1f}s]", event["kind"]]
    if event.get("task"):
        parts.append(event["task"])
    parts.append(event["status"])
    if event.get("agent"):
        parts.append(f"on {event['agent']}")
    if event.get("attempt") and event["attempt"] > 1:
        parts.append(f"(attempt {event['attempt']})")
    if event.get("message"):
        parts.append(f"- {event['message']}")
    return " ".join(parts)


class PlainProgress:
    """Prints every event as a line; for logs, CI and `ray job submit`."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.start_s: float | None = None

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        self.stream.flush()

    def update(self, events: list[dict[str, Any]], summary: dict[str, Any]) -> None:
        for event in events:
            if self.start_s is None:
                self.start_s = event["time_s"]
            print(event_line(event, self.start_s), file=self.stream, flush=True)


class LiveProgress:
    """A rich live panel: tasks by state, busy agents, tokens, elapsed time and the latest events."""

    def __init__(self, title: str, console: Any = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.title = title
        self.console = console or Console()
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.recent: deque[str] = deque(maxlen=8)
        self.start_s: float | None = None

    def __enter__(self) -> LiveProgress:
        self.live.__enter__()
        return self

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        self.live.__exit__(kind, error, tb)

    def update(self, events: list[dict[str, Any]], summary: dict[str, Any]) -> None:
        from rich.panel import Panel
        from rich.table import Table

        for event in events:
            if self.start_s is None:
                self.start_s = event["time_s"]
            self.recent.append(event_line(event, self.start_s))
        table = Table.grid(padding=(0, 2))
        table.add_row("status", f"[bold]{summary['status']}[/bold]", "elapsed", f"{summary['elapsed_s']:.1f} s",
                      "tokens", str(summary["tokens"]), "model calls", str(summary["llm_calls"]))
        states = Table(show_header=True, header_style="bold")
        for state in SHOWN_STATES:
            states.add_column(state, justify="right")
        states.add_row(*(str(summary["tasks"].get(s, 0)) for s in SHOWN_STATES))
        busy = ", ".join(f"{a} x{n}" if n > 1 else a for a, n in sorted(summary["busy_agents"].items())) or "-"
        body = Table.grid()
        for row in (table, states, f"busy agents: {busy}", "\n".join(self.recent)):
            body.add_row(row)
        self.live.update(Panel(body, title=self.title))


def make_progress(title: str, *, tty: bool | None = None) -> PlainProgress | LiveProgress:
    """Live view when stdout is a terminal, plain lines otherwise."""
    return LiveProgress(title) if (sys.stdout.isatty() if tty is None else tty) else PlainProgress()
