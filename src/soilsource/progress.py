"""Progress bars and warnings on stderr, so stdout stays clean for tables.

One console for the whole package: every long step goes through :func:`track`,
every warning through :func:`warn`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

#: When stderr is not a terminal (a redirected log, CI), :func:`track` prints one line per
#: step at most this often instead of a live bar: a 20-minute explanation step then leaves
#: about 40 lines in the log, and a step shorter than this leaves none.
LOG_EVERY_S = 30.0

stderr = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)


def warn(message: str) -> None:
    """Print one warning line on stderr (never stops the run)."""
    stderr.print(f"soilsource: warning: {message}", markup=False, soft_wrap=True)


def info(message: str) -> None:
    """Print one line of news about a long step on stderr (kept in redirected logs too)."""
    stderr.print(f"soilsource: {message}", markup=False, soft_wrap=True)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar on stderr.

    On a terminal, a live rich bar. When stderr is not a terminal (a log file, a pipe,
    CI), rich draws nothing live, so a plain line ``soilsource: DESCRIPTION: 40/200
    (20 %), 1 min 5 s, about 4 min 20 s left`` is printed at most every
    :data:`LOG_EVERY_S` seconds, and a last one when a step that printed any ends: a
    long step is visible in a redirected log, and quick steps (tests) print nothing.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if not stderr.is_terminal:
        yield from _logged(items, description, total)
        return
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    quiet = stderr.quiet
    try:
        with Progress(*columns, console=stderr, transient=False) as progress:
            try:
                yield from progress.track(items, total=total, description=description)
            except BaseException:  # failed or abandoned: a log gets only the error's line
                stderr.quiet = quiet or not stderr.is_terminal
                raise
    finally:
        stderr.quiet = quiet


def _logged(items: Iterable[T], description: str, total: int | None) -> Iterator[T]:
    """:func:`track` for a log: a line every :data:`LOG_EVERY_S` seconds, and at the end."""
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= LOG_EVERY_S:
            last = now
            info(progress_line(description, done, total, now - start))
    if last > start:  # it printed a line: say that it finished
        info(progress_line(description, done, total, time.monotonic() - start))


def progress_line(description: str, done: int, total: int | None, elapsed_s: float) -> str:
    """One log line about a long step.

    >>> progress_line("occlusion", 40, 200, 65.0)
    'occlusion: 40/200 (20 %), 1 min 5 s, about 4 min 20 s left'
    >>> progress_line("occlusion", 200, 200, 300.0)
    'occlusion: 200/200 (100 %), 5 min 0 s, done'
    >>> progress_line("tiles", 7, None, 12.0)
    'tiles: 7, 12 s'
    """
    line = f"{description}: {done}"
    if total:
        line += f"/{total} ({100 * done // total} %)"
    line += f", {_duration(elapsed_s)}"
    if total and done >= total:
        line += ", done"
    elif total and done:
        line += f", about {_duration(elapsed_s * (total - done) / done)} left"
    return line


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    hours, rest = divmod(whole, 3600)
    text = f"{rest // 60} min {rest % 60} s"
    return f"{hours} h {text}" if hours else text
