"""The bad-input corpus (``tests/badinputs/``): every case is one exact line on stderr, exit 2.

Each case in ``tests/badinputs/cases.yaml`` names its category, the command-line
arguments and the line the user must see. The test copies the case's base project
(``base/``, the tiny valid project of :mod:`tinyinputs`, or the Meuse example), lays
the case folder over it, runs ``soilsource.cli.main`` and compares the error line
exactly, with ``{dir}`` standing for the copied project. Progress bars and
warnings may precede the line on stderr; a traceback may not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from soilsource.cli import main

CORPUS = Path(__file__).resolve().parent / "badinputs"
BASES = {
    "tiny": CORPUS / "base",
    "meuse": CORPUS.parents[1] / "examples" / "meuse",
}
CATEGORIES = {"configuration", "samples", "rasters", "land use", "label rules", "command line"}
PREFIX = "soilsource: error: "


def load_cases() -> list[dict]:
    """The manifest, in file order."""
    return yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))["cases"]


CASES = load_cases()


def project(case: dict, tmp_path: Path) -> Path:
    """A copy of the case's base project with the case folder laid over it."""
    shutil.copytree(BASES[case.get("base", "tiny")], tmp_path, dirs_exist_ok=True)
    folder = CORPUS / "cases" / case["id"]
    if folder.is_dir():
        shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_manifest_is_complete():
    """At least 30 cases, every category covered, ids unique, every folder listed."""
    ids = [case["id"] for case in CASES]
    assert len(ids) >= 30
    assert len(set(ids)) == len(ids)
    assert {case["category"] for case in CASES} == CATEGORIES
    folders = {p.name for p in (CORPUS / "cases").iterdir() if p.is_dir()}
    assert folders <= set(ids), folders - set(ids)
    for case in CASES:
        assert set(case) <= {"id", "category", "base", "args", "stderr", "exit"}, case["id"]
        assert case["exit"] == 2 and case["stderr"].startswith(PREFIX), case["id"]


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_case_gives_its_one_line(case, tmp_path, capsys):
    root = project(case, tmp_path)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    args = [arg.replace("{dir}", str(root)) for arg in case["args"]]
    code = main(args)
    out, err = capsys.readouterr()
    expected = case["stderr"].replace("{dir}", str(root))
    assert code == case["exit"], err
    assert "Traceback" not in err and "Traceback" not in out
    errors = [line for line in err.splitlines() if line.startswith(PREFIX)]
    assert errors == [expected]
    assert err.rstrip("\n").splitlines()[-1] == expected  # the last word on stderr
    if args[0] in ("check", "predict"):  # these write nothing when they fail
        assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
