"""``soilsource predict``: a run's maps for new imagery, and every output of a run GIS-ready.

One tiny run (the two-region project of :mod:`tinyinputs`, one epoch) serves every test;
the refusals of mismatched imagery are also cases of the bad-input corpus.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from pyproj import Transformer
from rasterio.enums import Resampling

from soilsource.cli import main
from soilsource.gisout import overview_count
from soilsource.learn.training import TrainSettings
from soilsource.pipeline.runner import run
from soilsource.rundir import read_status

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tinyinputs import BAND_NAMES, imagery_data, write_project, write_raster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    config = write_project(root / "project")
    settings = TrainSettings(max_epochs=1, batch_size=16, patience=1)
    run(config, root / "run", settings=settings, device="cpu")
    return root


def _read(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    with rasterio.open(path) as src:
        return src.read(1), src.tags()


def test_predict_on_the_runs_own_imagery_reproduces_its_maps(tiny_run, capsys):
    out = tiny_run / "again"
    imagery = tiny_run / "project" / "imagery.tif"
    for region in ("r1", "r2"):
        code = main(["predict", str(tiny_run / "run"), "--imagery", str(imagery),
                     "--region", region, "--out", str(out / region)])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        for kind in ("probability", "concentration", "applicability"):
            mine = out / region / kind / f"{region}.tif"
            theirs = tiny_run / "run" / kind / f"{region}.tif"
            (a, tags_a), (b, tags_b) = _read(mine), _read(theirs)
            assert np.isfinite(a).any()
            np.testing.assert_array_equal(a, b)  # value for value, NaN where NaN
            assert tags_a == tags_b  # rule, limits, model, units
            assert mine.read_bytes() == theirs.read_bytes()  # the very same file
            assert mine.with_suffix(".qml").read_text() == theirs.with_suffix(".qml").read_text()
        status = read_status(out / region)
        assert status["status"] == "complete" and status["kind"] == "predict"
        assert status["region"] == region
        report = (out / region / "report.html").read_text()
        assert "Rule: Cd value &gt; 0.5 mg/kg" in report and "no applicability map" not in report
        assert "applicability" in status["maps"]


def test_predict_refuses_swapped_bands_and_another_pixel_size(tiny_run, capsys):
    source = tiny_run / "project" / "imagery.tif"
    with rasterio.open(source) as src:
        profile, data, names = src.profile, src.read(), src.descriptions
    swapped = tiny_run / "swapped.tif"
    with rasterio.open(swapped, "w", **profile) as dst:
        dst.write(data[[1, 0, 2]])
        dst.descriptions = (names[1], names[0], names[2])
    coarse = tiny_run / "coarse.tif"
    with rasterio.open(source) as src:
        half = src.read(
            out_shape=(3, src.height // 2, src.width // 2), resampling=Resampling.average
        )
        transform = src.transform @ src.transform.scale(2, 2)
    grid = {"width": half.shape[2], "height": half.shape[1], "transform": transform}
    with rasterio.open(
        coarse, "w", **{**profile, **grid, "blockxsize": 16, "blockysize": 16}
    ) as dst:
        dst.write(half)
        dst.descriptions = names
    expected = {
        swapped: "band 1: is 'red', but the model was trained with 'blue' there",
        coarse: "pixel size: 20 m, but the model was trained on 10 m pixels",
    }
    for imagery, line in expected.items():
        out = tiny_run / f"refused_{imagery.stem}"
        code = main(["predict", str(tiny_run / "run"), "--imagery", str(imagery),
                     "--region", "r1", "--out", str(out)])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2
        assert len(err) == 1 and line in err[0] and err[0].startswith("soilsource: error: ")
        assert not out.exists()  # nothing written


def test_every_raster_of_a_run_is_a_styled_cog(tiny_run):
    rasters = sorted((tiny_run / "run").rglob("*.tif"))
    assert {p.parent.name for p in rasters} == {
        "sensitivity",
        "probability",
        "concentration",
        "applicability",
    }
    for path in rasters:
        with rasterio.open(path) as src:
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG", path
            assert src.profile["tiled"] and src.block_shapes == [(256, 256)]
            assert len(src.overviews(1)) == overview_count(src.width, src.height)
            tags = src.tags()
            assert {"QUANTITY", "UNITS", "MODEL"} <= set(tags), path
            assert tags["MODEL"].startswith("SI-LICNet, models/")
        if path.parent.name != "sensitivity":
            assert tags["RULE"].startswith("Cd value > 0.5 mg/kg")
        assert tags["UNITS"] == ("mg/kg" if path.parent.name == "concentration" else "1")
        qml = path.with_suffix(".qml")
        root = ET.fromstring(qml.read_text().split("\n", 1)[1])
        values = [float(i.get("value")) for i in root.iter("item")]
        if path.parent.name == "probability":
            assert (values[0], values[-1]) == (0.0, 1.0)
        if path.parent.name == "sensitivity":
            assert values[0] == pytest.approx(-values[-1])


def test_predictions_state_their_crs_and_lonlat_at_full_precision(tiny_run):
    table = pd.read_csv(tiny_run / "run" / "predictions.csv", dtype={"sample_id": str})
    assert (table["crs"] == "EPSG:32649").all()
    lon, lat = Transformer.from_crs("EPSG:32649", "EPSG:4326", always_xy=True).transform(
        table["x"].to_numpy(), table["y"].to_numpy()
    )
    np.testing.assert_allclose(table["lon"], lon, rtol=0, atol=1e-12)
    np.testing.assert_allclose(table["lat"], lat, rtol=0, atol=1e-12)
    samples = pd.read_csv(tiny_run / "project" / "samples.csv", dtype={"sample_id": str})
    merged = table.merge(samples, on="sample_id", suffixes=("", "_given"))
    np.testing.assert_allclose(merged["lon"], merged["lon_given"], atol=1e-9)  # ~0.1 mm


def test_saved_model_records_its_imagery_and_rule(tiny_run):
    from soilsource.models.modelio import read_header

    metadata = read_header(tiny_run / "run" / "models" / "r1" / "silicnet.pt")["metadata"]
    assert metadata["imagery"]["band_names"] == ["blue", "red", "nir"]
    assert metadata["imagery"]["pixel_size_m"] == 10.0
    assert metadata["imagery"]["scales"] == [1.0, 1.0, 1.0]
    rule = metadata["maps"]["r1"]["rule"]
    assert rule["limits"] == [0.5] and rule["weights"] == [1.0]
    assert json.loads(json.dumps(metadata)) == metadata


def test_predict_derives_the_context_bands_the_model_was_trained_with(tmp_path, capsys):
    """A run with patch.context_m: its model records 3 bands and their context; predict on
    the same 3-band imagery derives the same context and reproduces the run's map value
    for value; imagery with a band missing is refused in terms of the user's 3 bands."""
    from soilsource.models.modelio import read_header

    config = write_project(tmp_path / "project", patch={"size_m": 320.0, "context_m": [80.0]})
    run(config, tmp_path / "run", settings=TrainSettings(max_epochs=1, batch_size=16),
        device="cpu")  # fmt: skip
    metadata = read_header(tmp_path / "run" / "models" / "r1" / "silicnet.pt")["metadata"]
    assert metadata["imagery"]["band_names"] == [
        "blue", "red", "nir", "blue@ctx80m", "red@ctx80m", "nir@ctx80m"
    ]  # fmt: skip
    imagery = tmp_path / "project" / "imagery.tif"
    code = main(["predict", str(tmp_path / "run"), "--imagery", str(imagery),
                 "--region", "r1", "--out", str(tmp_path / "again")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    a, _ = _read(tmp_path / "again" / "probability" / "r1.tif")
    b, _ = _read(tmp_path / "run" / "probability" / "r1.tif")
    assert np.isfinite(a).any()
    np.testing.assert_array_equal(a, b)
    fewer = write_raster(tmp_path / "fewer.tif", imagery_data(1)[:2], nodata=0,
                         descriptions=BAND_NAMES[:2])  # fmt: skip
    code = main(["predict", str(tmp_path / "run"), "--imagery", str(fewer),
                 "--region", "r1", "--out", str(tmp_path / "no")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "2 bands, but the model was trained on 3 (blue, red, nir)" in err


def test_predict_from_a_run_without_its_kept_applicability_says_so(tiny_run, tmp_path, capsys):
    """A run saved before soilsource kept the area of applicability beside its model still
    predicts; the report says why there is no applicability map."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_run / "run", old)
    kept = sorted(old.glob("models/*/silicnet.aoa-*.npz"))
    assert [p.name for p in kept] == ["silicnet.aoa-r1.npz", "silicnet.aoa-r2.npz"]
    for path in kept:
        path.unlink()
    out = tmp_path / "pred"
    code = main(["predict", str(old), "--imagery", str(tiny_run / "project" / "imagery.tif"),
                 "--region", "r1", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert not (out / "applicability").exists()
    assert "no applicability map: the run was saved before" in (out / "report.html").read_text()
