"""How a command talks while it works, on stderr (stdout keeps the results):

- `text` on a terminal: a live line with the current stage and its elapsed time, and a line per
  finished stage (seconds, rows, peak memory);
- `text` elsewhere (a pipe, a CI log, a scheduler that keeps stderr): one plain line per finished
  stage, timestamped, never a control sequence;
- `json`: one JSON object per line (`ts`, `level`, `event`, and the event's fields), for Airflow,
  Dagster or Kubernetes log collectors; warnings and errors are lines of their own.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

from rich.console import Console
from rich.markup import escape

LOG_FORMATS = ("text", "json")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RunLog:
    """The stage reporter of one command (resolution.Reporter: `log(event, entry)`), and its
    warnings, errors and closing lines."""

    def __init__(self, console: Console, log_format: str = "text", quiet: bool = False):
        if log_format not in LOG_FORMATS:
            raise ValueError(f"unknown log format {log_format!r} (expected one of {', '.join(LOG_FORMATS)})")
        self.console, self.format, self.quiet = console, log_format, quiet
        self.live = log_format == "text" and console.is_terminal and not quiet
        self._status = None

    # -- JSON lines -----------------------------------------------------------------------------
    def emit(self, level: str, event: str, **fields) -> None:
        """One JSON log line (json format only)."""
        if self.format != "json" or (self.quiet and level == "info"):
            return
        line = json.dumps({"ts": _now(), "level": level, "event": event, **fields}, default=str)
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    # -- stages ---------------------------------------------------------------------------------
    def __call__(self, event: str, entry: dict) -> None:
        stage = entry["stage"]
        if event == "start":
            if self._status is not None:
                self._status.update(f"[bold]{escape(stage)}")
            self.emit("info", "stage_started", stage=stage, rows_in=entry.get("rows_in"))
            return
        rows = entry.get("rows_out")
        self.emit("info", "stage_finished", stage=stage, seconds=entry.get("seconds"), rows_in=entry.get("rows_in"),
                  rows_out=rows, peak_rss_mb=entry.get("peak_rss_mb"))
        if self.format != "text" or self.quiet:
            return
        seconds, peak = entry.get("seconds", 0.0), entry.get("peak_rss_mb", 0.0)
        if self.live:
            count = f"{rows:>12,} rows" if isinstance(rows, int) else " " * 17
            self.console.print(f"  [green]done[/green] {escape(stage):<44} {seconds:7.2f} s {count} {peak:8,.0f} MB peak",
                               highlight=False)
        else:
            count = f", {rows:,} rows" if isinstance(rows, int) else ""
            self.console.print(f"{_now()} resolver: {stage} done in {seconds:.2f} s{count}, {peak:,.0f} MB peak",
                               highlight=False, markup=False)

    def __enter__(self) -> "RunLog":
        if self.live:
            self._status = self.console.status("starting")
            self._status.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)
            self._status = None

    # -- the rest -------------------------------------------------------------------------------
    def warning(self, text: str, label: str = "warning") -> None:
        if self.format == "json":
            self.emit("warning", label.replace(" ", "_"), message=text)
        else:
            self.console.print(f"[yellow]{escape(label)}:[/yellow] {escape(text)}", highlight=False, soft_wrap=True)

    def info(self, text: str, event: str = "info", **fields) -> None:
        if self.format == "json":
            self.emit("info", event, message=text, **fields)
        else:
            self.console.print(text, highlight=False, soft_wrap=True)


def error_line(log_format: str, label: str, message: str, code: int, **fields) -> None:
    """A failed command's one line on stderr, in the command's log format (`fields`: more JSON
    fields, such as an unexpected failure's traceback)."""
    if log_format == "json":
        sys.stderr.write(json.dumps({"ts": _now(), "level": "error", "event": label.replace(" ", "_"),
                                     "message": message, "exit_code": code, **fields}) + "\n")
    else:
        Console(stderr=True, soft_wrap=True).print(f"[red]{escape(label)}:[/red] {escape(message)}", highlight=False)
