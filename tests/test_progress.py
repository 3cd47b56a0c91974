"""Progress in a redirected log: plain lines every LOG_EVERY_S seconds, none for quick steps."""

from __future__ import annotations

import pytest

from soilsource import progress


def test_a_log_gets_lines_of_a_long_step(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)  # every step counts as long
    assert list(progress.track(range(3), "occlusion")) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("soilsource: occlusion: 1/3 (33 %), 0 s, about")
    assert lines[-1] == "soilsource: occlusion: 3/3 (100 %), 0 s, done"


def test_a_quick_step_prints_nothing(capsys):
    assert list(progress.track(iter(range(5)), "tiles")) == list(range(5))
    assert capsys.readouterr().err == ""


def test_a_failing_step_prints_no_bar(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 3600.0)

    def items():
        yield 1
        raise OSError("disk full")

    with pytest.raises(OSError):
        list(progress.track(items(), "tiles", total=4))
    assert capsys.readouterr().err == ""


def test_durations_read_as_minutes_and_hours():
    assert (
        progress.progress_line("x", 1, 2, 3725.0)
        == "x: 1/2 (50 %), 1 h 2 min 5 s, about 1 h 2 min 5 s left"
    )
