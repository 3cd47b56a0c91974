"""Map layers of the report: decimated reads on a display grid, colours, transparency."""

from __future__ import annotations

import io

import numpy as np
import pytest
import rasterio
from matplotlib.colors import Normalize
from PIL import Image
from rasterio.transform import from_origin

from soilsource.report.figures import (
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


# --- map furniture ---------------------------------------------------------------------------


def test_furniture_of_a_projected_map_names_the_crs_and_measures_the_ground():
    from soilsource.report.figures import MapGrid, map_furniture

    grid = MapGrid(780, 1040, (178440.0, 329600.0, 181560.0, 333760.0))  # Meuse, RD New
    f = map_furniture(grid, "EPSG:28992")
    assert f.crs == "EPSG:28992 (Amersfoort / RD New), metre"
    labels = [label for _, label in f.x_ticks]
    assert labels[0].replace("\u2009", "") == "179000" and len(labels) >= 3
    assert all(0 <= pos <= 100 for pos, _ in f.x_ticks + f.y_ticks)
    top = min(f.y_ticks)
    assert float(top[1].replace("\u2009", "")) > float(max(f.y_ticks)[1].replace("\u2009", ""))
    assert f.scale_label == "500 m"  # a quarter of 3.12 km, rounded down to 1-2-5
    assert f.scale_pct == pytest.approx(500 / 3120 * 100, rel=2e-3)  # RD's scale factor ~1
    assert abs(f.north_deg) < 1  # near RD's central meridian, grid north is true north


def test_furniture_points_to_true_north_and_works_in_degrees():
    from soilsource.report.figures import MapGrid, map_furniture

    # UTM 49N, 2 degrees east of the central meridian (111 E) at 23 N: convergence ~0.8 deg
    grid = MapGrid(500, 500, (700_000.0, 2_540_000.0, 710_000.0, 2_550_000.0))
    f = map_furniture(grid, "EPSG:32649")
    assert 0.5 < -f.north_deg < 1.2  # true north is west of grid north east of the meridian
    assert f.scale_label == "2 km"
    geographic = map_furniture(MapGrid(400, 400, (113.5, 22.5, 114.0, 23.0)), "EPSG:4326")
    assert geographic.crs.endswith("degrees")
    assert geographic.x_ticks[0][1].endswith("°E")
    assert geographic.north_deg == pytest.approx(0.0, abs=1e-6)
    # 0.5 degree of longitude at 22.75 N is about 51.4 km: a 10 km bar is ~19 %
    assert geographic.scale_label == "10 km"
    assert geographic.scale_pct == pytest.approx(10 / 51.4 * 100, rel=0.01)


def test_svg_paths_clip_to_the_map_and_keep_lines_open():
    import shapely

    from soilsource.report.figures import MapGrid, svg_paths

    grid = MapGrid(100, 100, (0.0, 0.0, 1000.0, 1000.0))
    river = shapely.LineString([(-500, 500), (1500, 500)])  # runs on beyond the map
    square = shapely.box(100, 100, 300, 300)
    far = shapely.box(5000, 5000, 6000, 6000)
    line, box, nothing = svg_paths([river, square, far], grid)
    assert line == "M0.0,50.0 L100.0,50.0"
    assert box.startswith("M") and box.endswith(" Z")
    assert nothing == ""


def test_positive_evidence_stays_red_when_the_negative_side_is_larger():
    """Issue 13: a scale set by large negative values made positive evidence invisible."""
    values = np.ma.masked_invalid(np.array([[-10.0, -5.0, 0.0, 0.5, 1.0]], dtype="float32"))
    norm = symmetric_norm(values, percentile=100)
    assert float(norm(0.0)) == 0.5  # centred on zero
    rgba = _png(overlay_png(values, "RdBu_r", norm, fade_centre=True))
    assert rgba[0, 4, 3] == 255 and rgba[0, 0, 3] == 255  # both extremes fully opaque
    assert rgba[0, 4, 0] > 2 * rgba[0, 4, 2]  # the largest positive value: full (dark) red
