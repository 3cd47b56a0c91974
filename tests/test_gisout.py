"""GIS-ready outputs: Cloud-Optimised GeoTIFFs with tags and a QGIS style beside them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from soilsource.gisout import RasterStyle, cog_path, overview_count, raster_style_qml, style_path

PROFILE = {
    "driver": "GTiff",
    "dtype": "float32",
    "count": 1,
    "crs": "EPSG:28992",
    "transform": from_origin(178440, 333760, 40, 40),
    "nodata": float("nan"),
}


def _items(qml: str) -> list[ET.Element]:
    return ET.fromstring(qml.split("\n", 1)[1]).findall(".//colorrampshader/item")


def _write(path: Path, data: np.ndarray, style: RasterStyle, **profile) -> Path:
    h, w = data.shape
    with (
        cog_path(path, style, {"EXTRA": "x"}) as tmp,
        rasterio.open(tmp, "w", width=w, height=h, **PROFILE, **profile) as dst,
    ):
        dst.write(data, 1)
    return path


@pytest.mark.parametrize("shape", [(104, 78), (700, 300)])
def test_every_raster_is_a_tiled_cog_with_overviews_tags_and_style(tmp_path, shape):
    rng = np.random.default_rng(0)
    data = rng.random(shape).astype(np.float32)
    data[:3] = np.nan
    style = RasterStyle("probability", "probability of exceeding the rule", "1", "limit 2", "m")
    path = _write(tmp_path / "probability" / "all.tif", data, style)  # written untiled
    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.profile["tiled"] and src.block_shapes == [(256, 256)]
        assert len(src.overviews(1)) == overview_count(shape[1], shape[0]) >= 1
        assert src.tags()["QUANTITY"] == "probability of exceeding the rule"
        assert src.tags()["RULE"] == "limit 2" and src.tags()["MODEL"] == "m"
        assert src.tags()["UNITS"] == "1" and src.units == ("1",)
        assert src.tags()["EXTRA"] == "x"
        assert src.compression.value == "DEFLATE"
        np.testing.assert_array_equal(src.read(1), data)  # lossless
        overview = src.read(1, out_shape=(shape[0] // 2, shape[1] // 2))
        assert np.isfinite(overview).any()
    assert sorted(p.name for p in path.parent.iterdir()) == ["all.qml", "all.tif"]
    items = _items(style_path(path).read_text())
    assert [float(i.get("value")) for i in items] == pytest.approx(np.linspace(0, 1, 11))


def test_a_failed_write_leaves_nothing(tmp_path):
    style = RasterStyle("probability", "p", "1")
    with pytest.raises(RuntimeError), cog_path(tmp_path / "p.tif", style) as tmp:
        with rasterio.open(tmp, "w", width=4, height=4, **PROFILE) as dst:
            dst.write(np.zeros((4, 4), np.float32), 1)
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_concentration_ramp_is_log_spaced_over_the_values(tmp_path):
    data = np.geomspace(0.2, 20, 100 * 100).reshape(100, 100).astype(np.float32)
    style = RasterStyle("concentration", "predicted median concentration", "mg/kg")
    path = _write(tmp_path / "c.tif", data, style)
    items = _items(style_path(path).read_text())
    values = np.array([float(i.get("value")) for i in items])
    assert values[0] > 0.2 and values[-1] < 20
    np.testing.assert_allclose(np.diff(np.log(values)), np.log(values[1] / values[0]))
    assert items[0].get("label").endswith("mg/kg")


def test_style_names_the_colours_of_the_ramp():
    qml = raster_style_qml(RasterStyle("signed", "s", "1"), [-2.0, 0.0, 2.0])
    root = ET.fromstring(qml.split("\n", 1)[1])
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor"
    assert (renderer.get("classificationMin"), renderer.get("classificationMax")) == ("-2.0", "2.0")
    colours = [i.get("color") for i in _items(qml)]
    assert colours[0].startswith("#0") and colours[-1].startswith("#6")  # dark blue, dark red
