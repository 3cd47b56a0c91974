"""Map layers of the report: decimated reads on a display grid, colours, transparency."""

from __future__ import annotations

import io

import numpy as np
import pytest
import rasterio
from matplotlib.colors import Normalize
from PIL import Image
from rasterio.transform import from_origin

from soilsource.figures import (
    MAP_MAX_PX,
    colour_bar_png,
    map_grid,
    overlay_png,
    read_on_grid,
    symmetric_norm,
    true_colour_jpeg,
)


def _raster(path, data, nodata=0, descriptions=None):
    bands, height, width = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=bands,
        dtype=data.dtype, crs="EPSG:32649", transform=from_origin(500_000, 2_500_000, 10, 10),
        nodata=nodata, tiled=True,
    ) as dst:  # fmt: skip
        dst.write(data)
        for i, d in enumerate(descriptions or []):
            dst.set_band_description(i + 1, d)
    return path


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def test_large_raster_is_read_decimated(tmp_path):
    data = np.tile(np.arange(2000, dtype="uint16"), (2, 1000, 1)) + 1
    path = _raster(tmp_path / "big.tif", data)
    grid = map_grid(path)
    assert (grid.width, grid.height) == (MAP_MAX_PX, MAP_MAX_PX // 2)
    assert grid.bounds == (500_000, 2_490_000, 520_000, 2_500_000)
    values = read_on_grid(path, grid, [1])
    assert values.shape == (1, grid.height, grid.width)
    # Averaged over ~2.2 source pixels: a gradient from about 1 to 2000, increasing.
    row = values[0, 0].filled(np.nan)
    assert 1 <= row[0] < 5 and 1995 < row[-1] <= 2000 and np.all(np.diff(row) > 0)


def test_small_raster_is_not_upsampled(tmp_path):
    path = _raster(tmp_path / "small.tif", np.ones((1, 40, 60), "uint16"))
    grid = map_grid(path)
    assert (grid.width, grid.height) == (60, 40)
    col, row = grid.pixel_of(np.array([500_000 + 300.0]), np.array([2_500_000 - 100.0]))
    assert (col[0], row[0]) == (30, 10)


def test_true_colour_picks_bands_by_name_and_greys_nodata(tmp_path):
    data = np.zeros((3, 50, 50), "uint16")
    data[2, :, 25:] = 1000  # "red" is band 3: the right half is red, the left black
    data[:, :10] = 0  # nodata rows
    data[:, 10:] += 1
    path = _raster(tmp_path / "rgb.tif", data, descriptions=["blue", "green", "red"])
    jpeg = true_colour_jpeg(path, map_grid(path))
    assert jpeg[:2] == b"\xff\xd8"
    rgb = _png(jpeg)[..., :3].astype(int)
    assert rgb.shape == (50, 50, 3)
    assert np.abs(rgb[1:5, 2:20] - [233, 236, 239]).max() < 16  # nodata: the page grey (JPEG)
    assert rgb[30, 40, 0] > 200 and rgb[30, 40, 2] < 50  # red where red is high
    assert rgb[30, 10].max() < 50  # dark where it is low


def test_sensitivity_overlay_fades_at_zero_and_hides_nodata():
    values = np.ma.masked_invalid(np.array([[-1.0, 0.0, 1.0, np.nan]], dtype="float32"))
    norm = symmetric_norm(values, percentile=100)
    assert (norm.vmin, norm.vmax) == (-1, 1)
    rgba = _png(overlay_png(values, "RdBu_r", norm, fade_centre=True))
    assert list(rgba[0, :, 3]) == [255, 0, 255, 0]
    assert rgba[0, 2, 0] > rgba[0, 2, 2] and rgba[0, 0, 2] > rgba[0, 0, 0]  # red +, blue -
    opaque = _png(overlay_png(values, "magma", Normalize(0, 1)))
    assert list(opaque[0, :, 3]) == [255, 255, 255, 0]


@pytest.mark.parametrize("log", [False, True])
def test_colour_bar_is_a_png(log):
    from matplotlib.colors import LogNorm

    norm = LogNorm(0.1, 3) if log else Normalize(-1e-3, 1e-3)
    image = _png(colour_bar_png("viridis", norm, "label", log=log))
    assert image.shape[1] >= 250 and image[..., 3].max() == 255
