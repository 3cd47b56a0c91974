"""Command-line behaviour shared by every command: help, version, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from soilsource import __version__
from soilsource.cli import main


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("synth", "demo"):
        assert command in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["bogus"], "No such command 'bogus'"),
        (["synth"], "Missing option '--out'"),
        (["synth", "--out", "x", "--seed", "abc"], "Invalid value for '--seed'"),
        (["synth", "--out", "x", "--size-px", "3"], "Invalid value for '--size-px'"),
    ],
)
def test_bad_arguments_one_line_exit_2(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("soilsource: error: ")
    assert expected in err
    assert "Traceback" not in err


def test_console_script_exit_code_and_stderr():
    """The installed entry point returns main()'s code to the shell."""
    proc = subprocess.run(
        [sys.executable, "-m", "soilsource.cli", "synth"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("soilsource: error: ")
    assert "Traceback" not in proc.stderr


def test_console_script_version():
    """``soilsource --version`` (the installed entry point) prints the version and exits 0."""
    script = Path(sys.executable).parent / "soilsource"
    assert script.is_file(), f"no console script beside {sys.executable}"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"soilsource {__version__}"


@pytest.mark.parametrize("quick", [False, True])
def test_demo_profile_sets_the_demos_patch_folds_and_cheap_training(small_city, quick):
    from soilsource import cli
    from soilsource.config import load_config

    config = load_config(small_city / "config.yaml")
    members, min_steps = config.model.members, config.train.min_steps
    assert (members, min_steps) != (cli.DEMO_MEMBERS, cli.DEMO_MIN_STEPS)  # else no test
    cli.apply_demo_profile(config, quick=quick, training=False)  # the default training kept
    _, patch_m, folds, epochs = cli.demo_profile(quick)
    assert (config.patch.size_m, config.train.folds) == (patch_m, folds)
    assert (config.model.members, config.train.min_steps) == (members, min_steps)
    cli.apply_demo_profile(config, quick=quick)
    assert (config.train.max_epochs, config.train.min_steps) == (epochs, cli.DEMO_MIN_STEPS)
    assert (config.model.members, config.model.pretrain) == (1, False)
