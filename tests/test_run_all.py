"""benchmarks/run_all.py: one section per benchmark in docs/benchmarks.md, replaced alone."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_all(tmp_path, monkeypatch):
    """The run_all module pointed at a folder of two tiny fake benchmarks."""
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_all", module)
    spec.loader.exec_module(module)
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    for name, value in (("alpha", 1), ("beta", 2)):
        (bench / f"bench_{name}.py").write_text(
            f"print('| x |')\nprint('| - |')\nprint('| {name}-{value} |')\n"
        )
    (bench / "bench_broken.py").write_text("raise SystemExit(3)\n")
    monkeypatch.setattr(module, "HERE", bench)
    return module


def test_sections_are_written_and_replaced_alone(run_all, tmp_path, capsys):
    page = tmp_path / "docs" / "benchmarks.md"
    assert run_all.main(["alpha", "bench_beta", "--out", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# Benchmarks")
    assert "| alpha-1 |" in text and "| beta-2 |" in text
    assert text.index("## bench_alpha") < text.index("## bench_beta")
    for line in ("- command: `python benchmarks/bench_alpha.py`", "logical cores", "threads"):
        assert line in text
    assert "| alpha-1 |" in capsys.readouterr().out  # the tables are printed too

    # Rerunning one benchmark replaces its section only, in place.
    (run_all.HERE / "bench_alpha.py").write_text("print('| alpha-new |')\n")
    page.write_text(page.read_text().replace("| beta-2 |", "| beta-kept |"))
    assert run_all.main(["alpha", "--out", str(page)]) == 0
    text = page.read_text()
    assert "| alpha-new |" in text and "| alpha-1 |" not in text
    assert "| beta-kept |" in text
    assert text.count("## bench_alpha") == 1 and text.count("<!-- bench:bench_alpha start") == 1


def test_failure_and_unknown_names(run_all, tmp_path, capsys):
    page = tmp_path / "benchmarks.md"
    assert run_all.main(["broken", "--out", str(page)]) == 1
    assert "FAILED (exit 3)" in page.read_text()
    assert run_all.main(["nope", "--out", str(page)]) == 2
    assert "no benchmark 'nope'" in capsys.readouterr().err
