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
  :mod:`soilsource.resume`), or started afresh by :func:`prepare`.

Names that come from the inputs (regions, rasters) become file names only through
:func:`safe_stem`, so no sample table can make a run write outside its directory.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from os import PathLike
from pathlib import Path
from typing import Any

from soilsource import __version__
from soilsource.atomic import write_text_atomic
from soilsource.errors import InputError

STATUS_FILE = "run.json"
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
    return bool(status) and status.get("status") == "complete"


def prepare(out: str | PathLike[str], *, force: bool = False, option: str = "--out") -> Path:
    """Make ``out`` ready for a new run and mark it as running.

    Raises
    ------
    InputError
        ``out`` holds a complete run and ``force`` is False, holds files that are not
        a soilsource run, is not a directory, or cannot be written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(option, str(out), "exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        status = read_status(out)
        if status is None:
            raise InputError(
                option,
                str(out),
                "exists, holds files and is not a soilsource run; choose a new directory",
            )
        if status.get("status") == "complete" and not force:
            raise InputError(option, str(out), "holds a complete run; use --force to replace it")
        # Ours (a complete run with force, or an unfinished one): start afresh.
        for child in out.iterdir():
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
    out = Path(out)
    if force:
        raise InputError(option, "", "cannot be combined with --force (which starts afresh)")
    status = read_status(out) if out.is_dir() else None
    if status is None:
        raise InputError(
            option, str(out), "holds no soilsource run to resume; run without --resume"
        )
    if status.get("status") == "complete":
        raise InputError(option, str(out), "holds a complete run; nothing to resume")
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
