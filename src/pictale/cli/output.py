"""What the CLI prints: one-line errors, quiet library logs by default, progress that also works in a pipe."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

console = Console(stderr=True)

LOG_LEVELS = ("debug", "info", "warning", "error")
_QUIET_ENV = {
    # Read by the libraries when they load, so they are set before anything imports them.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # hub downloads and transformers' shard bars (diffusers follows, engine)
    "TRANSFORMERS_VERBOSITY": "error",  # "requires torchvision (not installed)" and similar notices
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DIFFUSERS_VERBOSITY": "error",
}
_SET_BY_US: set[str] = set()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` as one line on stderr and exit with `code`."""
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (a test runner may swap it between commands)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str = "info") -> None:
    """pictale's own lines at `level`; other libraries' INFO, progress bars and warnings only with "debug"."""
    level = level.lower()
    debug = level == "debug"
    for name, value in _QUIET_ENV.items():
        if not debug and name not in os.environ:
            os.environ[name] = value
            _SET_BY_US.add(name)
        elif debug and name in _SET_BY_US:  # `pictale serve --log-level debug`: the callback had set it
            os.environ.pop(name, None)
            _SET_BY_US.discard(name)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_pictale", False):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._pictale = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("pictale").setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("PIL").setLevel(logging.INFO)  # PIL's DEBUG is a line per PNG chunk
    logging.captureWarnings(True)  # library warnings become "py.warnings" records: shown with debug only
    logging.getLogger("py.warnings").setLevel(logging.WARNING if debug else logging.ERROR)
    if not debug:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def progress(*columns: Any) -> Any:
    """A rich progress display on a terminal; elsewhere (a pipe, a log file) a line now and then."""
    from rich.progress import Progress

    if console.is_terminal:
        return Progress(*columns, console=console)
    return LineProgress()


class LineProgress:
    """The part of rich's Progress the CLI uses: a line `description: done/total (elapsed)` each time a task
    passes another tenth of its total or changes its description, instead of a bar nobody sees."""

    def __init__(self, echo: Any = None) -> None:
        self._echo = echo or (lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
        self._tasks: list[dict[str, Any]] = []
        self._start = time.monotonic()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        self._tasks.append({"description": description, "total": total, "completed": 0, "shown": None})
        return len(self._tasks) - 1

    def update(self, task_id: int, *, description: str | None = None, completed: float | None = None, **kw: Any):
        task = self._tasks[task_id]
        if description is not None:
            task["description"] = description
        if kw.get("total") is not None:
            task["total"] = kw["total"]
        if completed is not None:
            task["completed"] = completed
        total = task["total"] or 0
        tenth = int(10 * task["completed"] / total) if total else 0
        mark = (task["description"], tenth)
        if task["completed"] and mark != task["shown"]:
            task["shown"] = mark
            elapsed = time.monotonic() - self._start
            self._echo(f"{task['description']}: {task['completed']:g}/{total:g} ({elapsed:.0f}s)")


def settings_error(exc: Any, flags: dict[str, Any]) -> str:
    """One line naming the flag (or PICTALE_* variable) that a pydantic ValidationError of Settings is about."""
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first.get("loc") else ""
    source = "--" + field.replace("_", "-") if flags.get(field) is not None else "PICTALE_" + field.upper()
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{source}: {message} (got {first.get('input')!r})" if field else message


class OneLineErrors(TyperGroup):
    """Every command: a pictale error (model not found, bad upload, ...) or an OS error (a folder that cannot
    be written) is `error: ...` on one line and exit status 2; the traceback is logged with --log-level debug."""

    def invoke(self, ctx: Any) -> Any:
        from pictale.core.errors import PictaleError

        try:
            return super().invoke(ctx)
        except typer.BadParameter as exc:  # a malformed or missing argument (`--port abc`): one line too
            command = f"{exc.ctx.command_path} --help" if exc.ctx is not None else "pictale --help"
            fail(f"{exc.format_message()} (see {command})")
        except PictaleError as exc:
            logging.getLogger("pictale.cli").debug("traceback", exc_info=True)
            fail(exc.message)
        except OSError as exc:
            logging.getLogger("pictale.cli").debug("traceback", exc_info=True)
            where = f": {exc.filename}" if exc.filename else ""
            fail(f"{exc.strerror or exc}{where}")
