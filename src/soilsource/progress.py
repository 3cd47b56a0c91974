"""Progress bars and warnings on stderr, so stdout stays clean for tables.

One console for the whole package: every long step goes through :func:`track`,
every warning through :func:`warn`.
"""

from __future__ import annotations

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

    Rich draws nothing live when stderr is not a terminal (CI, pipes), so this
    costs nothing in tests.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
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
