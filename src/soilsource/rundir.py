"""The run directory: where ``soilsource run`` writes, and whether what is there is complete.

A run directory carries ``run.json`` with ``"status": "running"`` while the pipeline
works and ``"complete"`` once every output is in place; every file in it is written
atomically (:mod:`soilsource.atomic`). So a directory without a complete ``run.json``
is never mistaken for a finished result, and an existing directory is never
overwritten by accident:

- a complete run is replaced only with ``force``;
- a directory that is not a soilsource run (no ``run.json``) but holds files is the
  user's, and is refused;
- an unfinished run is continued with :func:`resume` (checkpoints in
  :mod:`soilsource.pipeline.resume`), or started afresh by :func:`prepare`.

One run at a time per directory: :func:`claim` holds ``OUT/.soilsource.lock`` (an
``flock`` through the ``filelock`` package, with the holder's pid inside) for as long as
the run works, and a second run into the same directory is refused with one line. The
kernel drops the lock when its process dies, so the lock file a killed run leaves is
recovered by the next run; a run that ends, however it ends, removes the file, so a
finished directory looks as before.

:func:`check_out` is what :func:`prepare` and :func:`resume` refuse, found without
writing anything (the preflight, :mod:`soilsource.pipeline.preflight`, calls it before any
input is read).

Names that come from the inputs (regions, rasters) become file names only through
:func:`safe_stem`, so no sample table can make a run write outside its directory.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock, Timeout

from soilsource import __version__
from soilsource.atomic import write_text_atomic
from soilsource.errors import InputError

STATUS_FILE = "run.json"
LOCK_FILE = ".soilsource.lock"
"""Held (flock) by the process that runs into the directory; removed when it ends."""
_HELD: set[Path] = set()
"""Lock files this process holds (through :func:`claim`): its own run is no obstacle."""
_UNSAFE = re.compile(r'[\x00-\x1f/\\:*?"<>|]')


def safe_stem(name: str) -> str:
    """``name`` made safe as one file name inside the run directory.

    Path separators, control and reserved characters become ``_``, and leading dots
    are dropped, so ``..`` or ``../x`` can neither climb out nor hide a file.

    >>> safe_stem("../../etc/cron.d/x"), safe_stem("Dongguan North"), safe_stem("..")
    ('_.._etc_cron.d_x', 'Dongguan North', '_')
    """
    stem = _UNSAFE.sub("_", str(name)).strip().lstrip(".")
    return stem or "_"


def read_status(out: str | PathLike[str]) -> dict[str, Any] | None:
    """The ``run.json`` of a run directory, or None where there is none."""
    path = Path(out) / STATUS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"status": "unreadable"}


def is_complete(out: str | PathLike[str]) -> bool:
    """True when ``out`` holds a finished run."""
    status = read_status(out)
    return status is not None and status.get("status") == "complete"


def check_out(
    out: str | PathLike[str],
    *,
    force: bool = False,
    resume: bool = False,
    option: str = "--out",
) -> Path:
    """Refuse, without writing anything, a directory that :func:`prepare` (or, with
    ``resume``, :func:`resume`) would refuse, or that a live run holds.

    Raises
    ------
    InputError
        ``out`` is a file or under one, cannot be written, holds a run in progress,
        holds files that are not a soilsource run, holds a complete run (without
        ``force``; with ``resume``: nothing to resume), or, with ``resume``, holds no
        run or ``force`` is given too.
    """
    out = Path(out)
    if resume:
        if force:
            raise InputError(
                "--resume", "", "cannot be combined with --force (which starts afresh)"
            )
        if out.is_dir():
            _refuse_held(out, option)
        status = read_status(out) if out.is_dir() else None
        if status is None:
            raise InputError(
                "--resume", str(out), "holds no soilsource run to resume; run without --resume"
            )
        if status.get("status") == "complete":
            raise InputError("--resume", str(out), "holds a complete run; nothing to resume")
        _refuse_unwritable(out, option)
        return out
    if out.exists() and not out.is_dir():
        raise InputError(option, str(out), "exists and is not a directory")
    if out.is_dir():
        _refuse_held(out, option)
        if any(child.name != LOCK_FILE for child in out.iterdir()):
            status = read_status(out)
            if status is None:
                raise InputError(
                    option,
                    str(out),
                    "exists, holds files and is not a soilsource run; choose a new directory",
                )
            if status.get("status") == "complete" and not force:
                raise InputError(
                    option, str(out), "holds a complete run; use --force to replace it"
                )
    _refuse_unwritable(out, option)
    return out


def _refuse_unwritable(out: Path, option: str) -> None:
    """The nearest existing directory of ``out`` must be one we may write into."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():  # out lies under a file
        raise InputError(option, str(out), f"cannot write: {os.strerror(errno.ENOTDIR)}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(option, str(out), f"cannot write: {os.strerror(errno.EACCES)}")


def _refuse_held(out: Path, option: str) -> None:
    """A live process holds ``out``'s lock: refuse (a stale lock file is no obstacle)."""
    path = out / LOCK_FILE
    if not path.is_file() or path.resolve() in _HELD:
        return
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        if _holder_alive(path):
            raise _in_progress(out, option) from None
        return  # held, but not by the run that wrote its pid: claim() takes it over
    except OSError:
        return  # an unreadable lock file: claim() decides
    lock.release()


def _holder(path: Path) -> int | None:
    """The pid written in a lock file (None when there is none)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _holder_alive(path: Path, settle_s: float = 0.2) -> bool:
    """True unless the lock file names a process that has ended.

    The flock is the kernel's, released when its holder's descriptors close; the pid
    inside says who claimed it. A claimed lock whose pid is dead is stale (a descriptor
    of the killed run survived it somewhere): it is recovered. A pid read just while a
    new holder takes the file over could be its predecessor's, so a dead pid is read
    again after ``settle_s`` before the lock is called stale.
    """
    pid = _holder(path)
    if pid is None or _alive(pid):
        return True
    time.sleep(settle_s)
    again = _holder(path)
    return again != pid and (again is None or _alive(again))


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _in_progress(out: Path, option: str) -> InputError:
    try:
        pid = (out / LOCK_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        pid = ""
    who = f" (pid {pid})" if pid.isdigit() else ""
    return InputError(
        option,
        str(out),
        f"a run is in progress in this directory{who}; wait for it to end or choose another",
    )


@contextmanager
def claim(out: str | PathLike[str], *, option: str = "--out") -> Iterator[Path]:
    """Hold ``out``'s lock while the block runs (``out`` is created if need be).

    The lock file holds this process's pid, for the message a second run prints. It is
    removed when the block ends, however it ends; a killed process leaves it, and the
    kernel has released its ``flock``, so the next run takes it over (as it does a lock
    whose flock is still held when the pid inside has ended, :func:`_holder_alive`).

    Raises
    ------
    InputError
        Another live process holds the lock (exit 2, one line), or ``out`` cannot be
        created.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(option, str(out), f"cannot write: {exc.strerror or exc}") from exc
    path = out / LOCK_FILE
    lock = FileLock(path, timeout=0)
    try:
        try:
            lock.acquire()
        except Timeout:
            if _holder_alive(path):
                raise _in_progress(out, option) from None
            path.unlink(missing_ok=True)  # stale: a fresh file, a fresh flock
            lock = FileLock(path, timeout=0)
            lock.acquire()
    except Timeout:
        raise _in_progress(out, option) from None
    except OSError as exc:
        raise InputError(option, str(out), f"cannot write: {exc.strerror or exc}") from exc
    held = path.resolve()
    _HELD.add(held)
    try:
        with open(path, "r+", encoding="utf-8") as handle:  # no other process writes it now
            handle.write(f"{os.getpid()}\n")
            handle.truncate()
        yield out
    finally:
        _HELD.discard(held)
        path.unlink(missing_ok=True)  # held still: no other run can take it meanwhile
        lock.release()


def prepare(out: str | PathLike[str], *, force: bool = False, option: str = "--out") -> Path:
    """Make ``out`` ready for a new run and mark it as running.

    Raises
    ------
    InputError
        What :func:`check_out` refuses: ``out`` holds a complete run and ``force`` is
        False, holds files that are not a soilsource run, is not a directory, or cannot
        be written.
    """
    out = check_out(out, force=force, option=option)
    if out.is_dir():  # ours (a complete run with force, or an unfinished one): start afresh
        for child in out.iterdir():
            if child.name == LOCK_FILE:
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        mark(out, "running")
    except OSError as exc:
        raise InputError(option, str(out), f"cannot write: {exc.strerror or exc}") from exc
    return out


def resume(out: str | PathLike[str], *, force: bool = False, option: str = "--resume") -> Path:
    """Check that ``out`` holds an unfinished run to continue, and mark it as running.

    Raises
    ------
    InputError
        ``force`` is also given, ``out`` holds no soilsource run, or holds a
        complete one.
    """
    out = check_out(out, force=force, resume=True)
    try:
        mark(out, "running", resumed=True)
    except OSError as exc:
        raise InputError("--out", str(out), f"cannot write: {exc.strerror or exc}") from exc
    return out


def mark(out: str | PathLike[str], status: str, **details: Any) -> None:
    """Write ``run.json`` with ``status`` (``running`` or ``complete``) and details."""
    record = {
        "status": status,
        "soilsource": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **details,
    }
    write_text_atomic(Path(out) / STATUS_FILE, json.dumps(record, indent=2) + "\n")
