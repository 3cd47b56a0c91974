"""Atomic outputs: complete or absent, never half-written under the final name."""

from __future__ import annotations

import pytest

from soilsource.atomic import atomic_directory, atomic_path, write_text_atomic


def test_atomic_path_moves_into_place_on_success(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.suffix == ".json"  # drivers choose the format from the suffix
        tmp.write_text("{}")
        assert not target.exists()
    assert target.read_text() == "{}"
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_atomic_path_keeps_old_file_and_leaves_no_temp_on_failure(tmp_path):
    target = tmp_path / "predictions.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]


def test_write_text_atomic(tmp_path):
    path = write_text_atomic(tmp_path / "a.txt", "é")
    assert path.read_text(encoding="utf-8") == "é"


def test_atomic_directory_appears_whole(tmp_path):
    final = tmp_path / "city"
    with atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("x")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["city"]


def test_atomic_directory_removed_on_failure(tmp_path):
    final = tmp_path / "city"
    with pytest.raises(ValueError), atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("x")
        raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_never_replaces_users_files(tmp_path):
    final = tmp_path / "city"
    final.mkdir()
    (final / "mine.txt").write_text("keep")
    with pytest.raises(OSError), atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("x")
    assert (final / "mine.txt").read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir()] == ["city"]
