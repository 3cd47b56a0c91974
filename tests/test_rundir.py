"""The run directory and the environment: not writable, disk full, patches too big for memory.

Each is one line on stderr and exit code 2, and leaves nothing that looks complete.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import yaml

import soilsource.pipeline.runner
from soilsource.atomic import atomic_path, write_text_atomic
from soilsource.cli import main
from soilsource.errors import InputError
from soilsource.pipeline.resume import CHECKPOINTS
from soilsource.rundir import (
    LOCK_FILE,
    check_out,
    claim,
    is_complete,
    mark,
    prepare,
    read_status,
    resume,
)
from tinyinputs import claiming_process

BASE = Path(__file__).resolve().parent / "badinputs" / "base"
PREFIX = "soilsource: error: "


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The tiny valid project of the corpus, trained for one epoch, SI-LICNet only."""
    root = tmp_path / "project"
    shutil.copytree(BASE, root)
    raw = yaml.safe_load((root / "config.yaml").read_text())
    raw["model"] = {"baselines": []}
    raw["train"].update(max_epochs=1, patience=1, min_steps=0)
    raw["compute"] = {"device": "cpu"}
    (root / "config.yaml").write_text(yaml.safe_dump(raw))
    return root / "config.yaml"


def run_error(config: Path, out: Path, capsys) -> str:
    """``soilsource run CONFIG --out OUT``, which must fail with one line and exit 2."""
    assert main(["run", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(PREFIX)]
    assert len(lines) == 1, err
    return lines[0]


# --- prepare / resume --------------------------------------------------------------------------


def test_prepare_marks_running_and_restarts_an_unfinished_run(tmp_path):
    out = prepare(tmp_path / "run")
    assert read_status(out)["status"] == "running"
    (out / "half.tif").write_text("x")
    prepare(out)  # an unfinished run of ours starts afresh
    assert not (out / "half.tif").exists()
    mark(out, "complete")
    with pytest.raises(InputError, match="holds a complete run; use --force"):
        prepare(out)
    prepare(out, force=True)
    assert read_status(out)["status"] == "running"


def test_resume_continues_only_an_unfinished_run(tmp_path):
    with pytest.raises(InputError, match="holds no soilsource run to resume"):
        resume(tmp_path / "none")
    out = prepare(tmp_path / "run")
    (out / "kept.tif").write_text("x")
    assert resume(out) == out
    assert (out / "kept.tif").exists()  # resuming keeps what was finished
    assert read_status(out)["resumed"] is True
    with pytest.raises(InputError, match="cannot be combined with --force"):
        resume(out, force=True)
    mark(out, "complete")
    with pytest.raises(InputError, match="holds a complete run; nothing to resume"):
        resume(out)


# --- the environment ---------------------------------------------------------------------------


def test_out_under_a_file_is_one_line(project, tmp_path, capsys):
    out = project.parent / "samples.csv" / "run"
    assert run_error(project, out, capsys) == f"{PREFIX}--out: {out}: cannot write: Not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_out_in_a_read_only_directory_is_one_line(project, tmp_path, capsys):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        line = run_error(project, parent / "run", capsys)
    finally:
        parent.chmod(0o700)
    assert line == f"{PREFIX}--out: {parent / 'run'}: cannot write: Permission denied"


def test_disk_full_is_one_line_and_leaves_nothing_that_looks_complete(
    project, tmp_path, capsys, monkeypatch
):
    """The disk fills up while metrics.json is written: exit 2, no metrics.json, no
    temporary file, run.json still 'running'; after freeing space --resume finishes."""
    real = soilsource.pipeline.runner.write_text_atomic

    def full_disk(path, text):
        if Path(path).name != "metrics.json":
            return real(path, text)
        with atomic_path(path) as tmp:
            tmp.write_text(text[: len(text) // 2])  # half written, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    monkeypatch.setattr(soilsource.pipeline.runner, "write_text_atomic", full_disk)
    out = tmp_path / "run"
    assert run_error(project, out, capsys) == (
        f"{PREFIX}{out}: cannot write: no space left on device; "
        "free some space and run again with --resume"
    )
    assert not (out / "metrics.json").exists()
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert read_status(out)["status"] == "running" and not is_complete(out)

    monkeypatch.setattr(soilsource.pipeline.runner, "write_text_atomic", write_text_atomic)
    assert main(["run", str(project), "--out", str(out), "--resume"]) == 0
    assert is_complete(out) and (out / "metrics.json").is_file()


def test_patches_too_big_for_memory_are_refused_before_training(
    project, tmp_path, capsys, monkeypatch
):
    raw = yaml.safe_load(project.read_text())
    raw["patch"]["size_m"] = 640  # 64 px: 2048 working patches x 3 bands x 64^2 x 4 B = 96 MiB
    project.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=2**20))
    out = tmp_path / "run"
    assert run_error(project, out, capsys) == (
        f"{PREFIX}{project}: key 'patch.size_m': patches of 64 x 64 px and 3 bands need about "
        "96.0 MiB of memory in batches of 512, 1.0 MiB is free; use a smaller patch.size_m"
    )
    assert not (out / CHECKPOINTS / "cv").exists()  # no fold was trained


def test_every_file_of_a_run_is_moved_into_place(project, tmp_path, monkeypatch):
    """Each output file appears by os.replace of a temporary name (soilsource.atomic), so
    no file in a run directory was ever visible half written under its final name."""
    moved: set[Path] = set()
    replace = os.replace

    def spy(src, dst):
        moved.add(Path(dst))
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    out = tmp_path / "run"
    assert main(["run", str(project), "--out", str(out)]) == 0
    files = {p for p in out.rglob("*") if p.is_file()}
    assert files and is_complete(out)
    by_directory = {p for p in files if any(parent in moved for parent in p.parents)}
    assert files - by_directory <= moved, sorted(map(str, files - moved - by_directory))
    assert not [p for p in files if ".tmp-" in p.name or ".partial-" in str(p)]


def test_ctrl_c_is_one_line_and_the_run_resumes(project, tmp_path, capsys, monkeypatch):
    evaluate = soilsource.pipeline.runner.evaluate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(soilsource.pipeline.runner, "evaluate", interrupted)
    out = tmp_path / "run"
    assert main(["run", str(project), "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert (
        err.splitlines()[-1] == "soilsource: interrupted; 'soilsource run ... --resume' continues"
    )
    assert "Traceback" not in err and not is_complete(out)
    monkeypatch.setattr(soilsource.pipeline.runner, "evaluate", evaluate)
    assert main(["run", str(project), "--out", str(out), "--resume"]) == 0
    assert is_complete(out)


# --- one run per directory ---------------------------------------------------------------------


def test_a_second_run_into_a_directory_in_use_is_refused(project, tmp_path, capsys):
    out = tmp_path / "run"
    holder = claiming_process(out)
    try:
        before = sorted(p.name for p in out.iterdir())
        assert (out / LOCK_FILE).read_text().strip() == str(holder.pid)
        line = run_error(project, out, capsys)
        assert line == (
            f"{PREFIX}--out: {out}: a run is in progress in this directory (pid {holder.pid}); "
            "wait for it to end or choose another"
        )
        for flags in (["--force"], ["--resume"]):  # neither replaces nor continues it
            assert main(["run", str(project), "--out", str(out), *flags]) == 2
            assert "a run is in progress" in capsys.readouterr().err
        with pytest.raises(InputError, match="a run is in progress"), claim(out):
            pass
        assert sorted(p.name for p in out.iterdir()) == before
    finally:
        holder.communicate("")
    assert holder.returncode == 0 and not (out / LOCK_FILE).exists()  # released, removed
    with claim(out):  # free again
        assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_the_lock_of_a_killed_run_is_recovered(tmp_path):
    """A killed holder leaves its lock file (with its dead pid); the kernel released the
    flock, so the directory is free: check_out passes and the next claim takes it over."""
    out = tmp_path / "run"
    holder = claiming_process(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (out / LOCK_FILE).read_text().strip() == str(holder.pid)  # stale, left behind
    mark(out, "running")  # as a killed run leaves it
    check_out(out)
    check_out(out, resume=True)
    with claim(out):
        assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert not (out / LOCK_FILE).exists()
    assert prepare(out) == out and sorted(p.name for p in out.iterdir()) == ["run.json"]


def test_a_stale_lock_file_alone_is_not_the_users(tmp_path):
    """A run killed right after claiming leaves only the lock file: not a user's directory."""
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).write_text("999999999\n")  # no such process
    assert prepare(out) == out
    assert read_status(out)["status"] == "running"


@pytest.mark.slow
def test_a_finished_run_leaves_no_lock_file(project, tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(project), "--out", str(out)]) == 0
    assert is_complete(out) and not (out / LOCK_FILE).exists()


ORPHAN = """
import fcntl, sys
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
handle.seek(0); handle.truncate(); handle.write(sys.argv[2] + "\\n"); handle.flush()
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_lock_held_past_its_runs_death_is_recovered(tmp_path):
    """The flock outlives the run that wrote its pid (a descriptor of the killed run kept
    open elsewhere): the pid inside is dead, so the lock is stale and taken over."""
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    holder = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(out / LOCK_FILE), dead],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        mark(out, "running")
        check_out(out, resume=True)
        with claim(out):
            assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())
    finally:
        holder.communicate("")
