"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic six-region city, 128 x 128 px (1.28 km) per region, seed 0.

    Every region has every land-use class, 60 samples and both labels. A region is
    only as wide as the 1280 m patch of its config.yaml, so most such patches are
    partly outside the imagery: use patches of 320-640 m with it. Written once per
    test session; treat it as read-only.
    """
    from soilsource.synth import write_city

    out = tmp_path_factory.mktemp("small_city") / "city"
    write_city(out, seed=0, size_px=128)
    return out


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Pretrained trunks go to a per-session temporary cache, never the user's.

    Session-scoped, so it is in place before any module- or session-scoped fixture runs.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOILSOURCE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield
