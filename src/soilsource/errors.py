"""Errors that are the user's to fix, reported as one line and exit code 2.

Anything raised as :class:`InputError` names the file and the key, column or rows
at fault, so the command line can print it without a traceback. Any other
exception is a bug in soilsource (exit code 1).
"""

from __future__ import annotations

import errno
from os import PathLike
from pathlib import Path

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT, as shells report it): the run is left resumable."""
EXIT_BAD_INPUT = 2


class InputError(Exception):
    """Bad input or configuration: a file, where in it, and what is wrong.

    Parameters
    ----------
    source:
        The file (or command-line option) at fault.
    where:
        The key, column, row(s) or band in that source; empty when the whole
        source is at fault (missing, unreadable).
    message:
        What is wrong, in words a user can act on.

    Examples
    --------
    >>> str(InputError("samples.csv", "column 'cd'", "not found"))
    "samples.csv: column 'cd': not found"
    """

    def __init__(self, source: str | PathLike[str], where: str, message: str) -> None:
        self.source = str(source)
        self.where = where
        self.message = message
        super().__init__(self.line())

    def __reduce__(self):  # pickled as its three parts (from a process of a several-metal run)
        return (type(self), (self.source, self.where, self.message))

    def line(self) -> str:
        """The one-line message the command line prints."""
        parts = [self.source, self.where, self.message]
        line = ": ".join(p for p in parts if p)
        return " ".join(line.splitlines())  # one line, whatever a library's message holds


def format_rows(rows: list[int], limit: int = 10) -> str:
    """Row numbers as users see them in a spreadsheet (1-based, header excluded).

    >>> format_rows([3, 4, 9])
    'rows 3, 4, 9'
    >>> format_rows(list(range(1, 15)), limit=3)
    'rows 1, 2, 3 and 11 more'
    """
    shown = ", ".join(str(r) for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"{'row' if len(rows) == 1 else 'rows'} {shown}{more}"


_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
_REFUSED = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
            errno.EROFS: "read-only file system"}  # fmt: skip


def environment_error(exc: BaseException) -> InputError | None:
    """The user's environment at fault (disk full, no permission) as an :class:`InputError`.

    None for anything else, which stays a bug. A full disk names the directory being
    written (the file itself is a temporary name, see :mod:`soilsource.atomic`) and
    says how to go on.

    >>> environment_error(OSError(errno.ENOSPC, "No space", "/runs/a/.metrics.tmp-1.json")).line()
    '/runs/a: cannot write: no space left on device; free some space and run again with --resume'
    >>> environment_error(ValueError("a bug")) is None
    True
    """
    if not isinstance(exc, OSError) or exc.errno not in {**_FULL, **_REFUSED}:
        return None
    if exc.errno in _FULL:
        where = Path(exc.filename).parent if exc.filename else "output"
        reason = _FULL[exc.errno]
        return InputError(
            where, "", f"cannot write: {reason}; free some space and run again with --resume"
        )
    return InputError(exc.filename or "file", "", _REFUSED[exc.errno])


def size_text(n_bytes: float) -> str:
    """Bytes for people, in messages: ``1.5 GiB``, ``96.0 MiB``.

    >>> size_text(1.5 * 2**30), size_text(96 * 2**20)
    ('1.5 GiB', '96.0 MiB')
    """
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"
