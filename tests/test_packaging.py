"""What an installed soilsource carries: its version, report assets and ``py.typed``.

Under ``make test-pythons`` these tests run against the wheel installed in a fresh virtual
environment (``SOILSOURCE_EXPECT_INSTALLED=1``), which is what proves the wheel complete;
under ``make test`` (editable install) they check the same files in ``src/``.
"""

from __future__ import annotations

import os
import sysconfig
from importlib import metadata, resources
from pathlib import Path

import pytest

import soilsource

SOURCE = Path(__file__).resolve().parents[1] / "src" / "soilsource"


def test_version_is_the_distributions():
    """``soilsource.__version__`` and the installed metadata (what --version prints) agree."""
    assert metadata.version("soilsource") == soilsource.__version__


def test_package_data_is_installed():
    """Every report asset, byte for byte, and the ``py.typed`` marker come with the package."""
    package = resources.files("soilsource")
    assert package.joinpath("py.typed").is_file()
    # the configuration reference (every key, generated like docs/configuration.md)
    reference = package.joinpath("configuration.md")
    assert reference.is_file() and "`train.cv`" in reference.read_text(encoding="utf-8")
    assets = sorted(p for p in (SOURCE / "report" / "assets").iterdir() if p.is_file())
    assert assets, "no report assets in src/"
    for asset in assets:
        installed = package.joinpath("report", "assets", asset.name)
        assert installed.is_file(), f"{asset.name} is missing from the installed package"
        assert installed.read_bytes() == asset.read_bytes(), asset.name


@pytest.mark.skipif(
    os.environ.get("SOILSOURCE_EXPECT_INSTALLED") != "1",
    reason="only under make test-pythons (the wheel, installed)",
)
def test_tests_import_the_installed_wheel():
    """The package under test is the one in site-packages, not the source tree."""
    imported = Path(soilsource.__file__).resolve()
    assert imported.is_relative_to(Path(sysconfig.get_paths()["purelib"]).resolve()), imported
    assert not imported.is_relative_to(SOURCE), imported
