"""The bad-input corpus (``tests/badinputs/``): every case is one exact line on stderr, exit 2.

Each case in ``tests/badinputs/cases.yaml`` names its category, the command-line
arguments and the line the user must see. The test copies the case's base project
(``base/``, the tiny valid project of :mod:`tinyinputs`, or the Meuse example), lays
the case folder over it, runs ``soilsource.cli.main`` and compares the error line
exactly, with ``{dir}`` standing for the copied project.

Every case goes through ``run`` as well: a ``check`` case is run again as ``run CONFIG
--out {dir}/out``, and a ``run`` case about the inputs is checked again with ``check``;
both must give the same line (one preflight, :mod:`soilsource.pipeline.preflight`). Through ``run``
the test asserts what issue 16 asks: exit 2, exactly one line on stderr, no traceback,
no training started, and the project (``out`` included) exactly as before.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

import soilsource.pipeline.runner
from soilsource.cli import main
from tinyinputs import claiming_process, snapshot

CORPUS = Path(__file__).resolve().parent / "badinputs"
BASES = {
    "tiny": CORPUS / "base",
    "meuse": CORPUS.parents[1] / "examples" / "meuse",
}
CATEGORIES = {
    "configuration",
    "samples",
    "imagery",
    "land use and class table",
    "labels and metals",
    "mapping and reference",
    "memory and disk",
    "run directory",
    "resume",
    "predict",
    "command line",
}
INPUTS = CATEGORIES - {"run directory", "resume", "predict", "command line"}
"""Categories about the inputs themselves: ``check`` and ``run`` refuse them alike."""
PREFIX = "soilsource: error: "
RUN_ARGS = ["run", "{dir}/config.yaml", "--out", "{dir}/out"]


def load_cases() -> list[dict]:
    """The manifest, in file order."""
    return yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))["cases"]


def through(case: dict) -> list[list[str]]:
    """The command lines a case is run with: its own, and the other of check / run.

    A case may list ``through: [run]`` to say that only ``run`` sees it (the disk
    estimate is of a run's outputs).
    """
    args = case["args"]
    if "through" in case:
        commands = case["through"]
    elif args == ["check", "{dir}/config.yaml"]:
        commands = ["check", "run"]
    elif args == RUN_ARGS and case["category"] in INPUTS:
        commands = ["run", "check"]
    else:
        return [args]
    lines = {"check": ["check", "{dir}/config.yaml"], "run": RUN_ARGS}
    return [args if args[0] == c else lines[c] for c in commands]


CASES = load_cases()
RUNS = [(case, args) for case in CASES for args in through(case)]


def project(case: dict, tmp_path: Path) -> Path:
    """A copy of the case's base project with the case folder laid over it."""
    shutil.copytree(BASES[case.get("base", "tiny")], tmp_path, dirs_exist_ok=True)
    folder = CORPUS / "cases" / case["id"]
    if folder.is_dir():
        shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_manifest_is_complete():
    """At least 100 cases, every category covered, ids unique, every folder listed, and
    every case through run (predict cases through predict)."""
    ids = [case["id"] for case in CASES]
    assert len(ids) >= 100
    assert len(set(ids)) == len(ids)
    assert {case["category"] for case in CASES} == CATEGORIES
    folders = {p.name for p in (CORPUS / "cases").iterdir() if p.is_dir()}
    assert folders <= set(ids), folders - set(ids)
    keys = {"id", "category", "base", "args", "stderr", "exit", "env", "lock", "through"}
    for case in CASES:
        assert set(case) <= keys, case["id"]
        assert case["exit"] == 2 and case["stderr"].startswith(PREFIX), case["id"]
        commands = [args[0] for args in through(case)]
        assert "run" in commands or commands == ["predict"] or case["category"] == "command line"
    assert sum(1 for _, args in RUNS if args[0] == "run") >= 100


@pytest.mark.parametrize(
    ("case", "args"), RUNS, ids=[f"{case['id']}-{args[0]}" for case, args in RUNS]
)
def test_case_gives_its_one_line(case, args, tmp_path, capsys, monkeypatch):
    root = project(case, tmp_path)
    for name, value in case.get("env", {}).items():
        monkeypatch.setenv(name, str(value))
    trained = []
    monkeypatch.setattr(soilsource.pipeline.runner, "evaluate", lambda *a, **k: trained.append(a))
    expected = case["stderr"].replace("{dir}", str(root))
    holder = claiming_process(root / case["lock"]) if "lock" in case else None
    try:
        if holder is not None:
            expected = expected.replace("{pid}", str(holder.pid))
        before = snapshot(root)
        code = main([arg.replace("{dir}", str(root)) for arg in args])
        after = snapshot(root)
    finally:
        if holder is not None:
            holder.communicate("")
    out, err = capsys.readouterr()
    assert code == case["exit"], err
    assert "Traceback" not in err and "Traceback" not in out
    assert err.splitlines() == [expected]  # one line, nothing before it
    assert after == before, "a refused command wrote or changed a file"
    assert not trained, "run trained before refusing"
