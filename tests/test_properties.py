"""Property-based tests: whatever the file holds, the loaders answer with a result or an
:class:`~soilsource.errors.InputError`, never another exception (which would be exit 1).

Hypothesis writes configuration files (near-valid ones with a key or value broken, and
arbitrary text) and sample tables (the right columns with hostile cells: text, blanks,
NaN, infinities, huge numbers, duplicates), and runs :func:`load_config` and
:func:`read_samples` on them.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import yaml
from hypothesis import HealthCheck, given, settings

from soilsource.config import Config, SamplesConfig, load_config
from soilsource.errors import InputError
from soilsource.inputs import read_samples

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # a few seconds per property on the shared 2-core machine

VALID = {
    "metal": "Cd",
    "samples": {"path": "samples.csv", "x": "lon", "y": "lat", "crs": "EPSG:4326",
                "value": "cd_mgkg", "region": "region", "id": "sample_id", "ph": "ph"},
    "imagery": {"path": "imagery/{region}.tif"},
    "landuse": {"path": "landuse.tif", "classes": "classes.csv"},
    "label": {"rule": "threshold", "threshold": 0.3},
    "patch": {"size_m": 320},
    "explain": {"window_m": 80, "stride_m": 40},
    "model": {"baselines": ["random_forest"]},
    "train": {"scope": "region", "folds": 3, "cv": "spatial", "seed": 0},
    "compute": {"device": "cpu", "scheduler": None},
}  # fmt: skip

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["EPSG:4326", "{region}", "auto", "gb15618", "quantile", "..", "/", ""]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
KEYS = st.sampled_from(
    sorted({k for section in VALID.values() if isinstance(section, dict) for k in section})
    + list(VALID) + ["q", "background", "factor", "field", "band", "block_m", "hotspot_share",
                     "max_epochs", "patience", "max_nodata_share", "baseline", "layer"]
)  # fmt: skip


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def result_or_input_error(load, path: Path):
    """``load(path)``, or None after checking that the InputError is one line naming ``path``."""
    try:
        return load(path)
    except InputError as exc:
        assert exc.line().startswith(str(path))
        assert "\n" not in exc.line()
        return None


@st.composite
def broken_configs(draw) -> dict:
    """The valid configuration with a few keys set to arbitrary values, added or deleted."""
    raw = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from([None, *VALID]))
        node = raw if section is None or not isinstance(raw.get(section), dict) else raw[section]
        key = draw(KEYS)
        if draw(st.booleans()) and key in node:
            del node[key]
        else:
            node[key] = draw(VALUES)
    return raw


@SETTINGS
@given(broken_configs())
def test_config_loader_raises_only_input_errors(raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "config.yaml", yaml.safe_dump(raw, allow_unicode=True))
        config = result_or_input_error(load_config, path)
        if config is not None:
            assert isinstance(config, Config)
            assert config.explain.window_m <= config.patch.size_m


@SETTINGS
@given(st.text(max_size=200))
def test_config_loader_on_arbitrary_text(text):
    with tempfile.TemporaryDirectory() as tmp:
        result_or_input_error(load_config, _write(Path(tmp), "config.yaml", text))


CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["", "nan", "NA", "n.d.", "<0.01", "1e400", "-0", "True", "1,5", " 2 ", "é"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6),
)
COLUMNS = ["sample_id", "lon", "lat", "cd_mgkg", "ph", "region"]


@st.composite
def sample_tables(draw) -> str:
    """A CSV with the configured columns (sometimes one missing) and hostile cells."""
    columns = list(COLUMNS)
    if draw(st.booleans()):
        columns.remove(draw(st.sampled_from(COLUMNS)))
    n = draw(st.integers(0, 6))
    good = {"lon": "113.6", "lat": "22.8", "cd_mgkg": "0.3", "ph": "6.5", "region": "r1"}
    rows = []
    for i in range(n):
        ok = [f"S{i}" if c == "sample_id" else good[c] for c in columns]
        row = [cell if draw(st.integers(0, 3)) else draw(CELLS) for cell in ok]
        rows.append(",".join('"' + cell.replace('"', '""') + '"' for cell in row))
    return "\n".join([",".join(columns), *rows]) + "\n"


@SETTINGS
@given(sample_tables())
def test_sample_loader_raises_only_input_errors(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "samples.csv", text)
        spec = SamplesConfig(**{**VALID["samples"], "path": path})
        samples = result_or_input_error(lambda _: read_samples(spec), path)
        if samples is not None:
            assert len(samples) >= 1
            assert samples["value"].ge(0).all()
            assert samples.geometry.x.notna().all()
