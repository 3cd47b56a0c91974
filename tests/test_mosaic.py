"""Sensitivity mosaics: known answers, agreement with a brute-force oracle, the file itself."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from soilsource.explain.mosaic import (
    accumulate_window,
    expected_map,
    mosaic_sensitivity,
    write_sensitivity,
)

TRANSFORM = from_origin(500_000.0, 2_560_000.0, 10.0, 10.0)
CRS = "EPSG:32649"


def brute_force_mosaic(maps, row_off, col_off, height, width):
    """Independent oracle: paste every patch into a padded canvas, then crop."""
    _, ph, pw = maps.shape
    pad_y, pad_x = ph, pw
    total = np.zeros((height + 2 * pad_y, width + 2 * pad_x))
    count = np.zeros_like(total)
    for m, r, c in zip(maps, row_off, col_off, strict=True):
        top, left = r + pad_y, c + pad_x
        seen = np.isfinite(m)
        total[top : top + ph, left : left + pw] += np.where(seen, m, 0)
        count[top : top + ph, left : left + pw] += seen
    total = total[pad_y : pad_y + height, pad_x : pad_x + width]
    count = count[pad_y : pad_y + height, pad_x : pad_x + width]
    out = np.full((height, width), np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def test_two_overlapping_constant_patches_average_in_the_overlap():
    maps = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 5.0)]).astype(np.float32)
    # Patch 1 read from origin (2, 2) covers rows/cols 2..5; patch 2 from (4, 4) covers 4..7.
    mosaic = mosaic_sensitivity(maps, np.array([2, 4]), np.array([2, 4]), 10, 10)
    assert mosaic.dtype == np.float32
    assert np.all(mosaic[4:6, 4:6] == 3.0)  # overlap: mean of 1 and 5
    assert mosaic[2, 2] == 1.0 and mosaic[3, 5] == 1.0
    assert mosaic[7, 7] == 5.0 and mosaic[6, 4] == 5.0
    covered = np.zeros((10, 10), bool)
    covered[2:6, 2:6] = covered[4:8, 4:8] = True
    assert np.array_equal(np.isfinite(mosaic), covered)


def test_maps_go_back_where_the_patch_extractor_read_them(tmp_path):
    """Round trip with soilsource.data.patches: a map of the patch's own pixels lands on them."""
    from soilsource.data.patches import extract_patches

    height, width = 30, 40
    grid = np.arange(height * width, dtype=np.float32).reshape(height, width) + 1
    path = tmp_path / "grid.tif"
    profile = {"driver": "GTiff", "dtype": "float32", "count": 1, "width": width}
    profile |= {"height": height, "crs": CRS, "transform": TRANSFORM}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(grid, 1)
    # Points anywhere in their pixels (even and odd patch sizes centre differently).
    xy = np.array([[500_003.0, 2_559_996.0], [500_158.0, 2_559_871.0], [500_395.0, 2_559_705.0]])
    for size in (4, 5):
        patches = extract_patches(path, xy, size)
        maps = np.where(patches.valid, patches.data[:, 0], np.nan)
        mosaic = mosaic_sensitivity(maps, patches.row_off, patches.col_off, height, width)
        seen = np.isfinite(mosaic)
        assert seen.any()
        np.testing.assert_array_equal(mosaic[seen], grid[seen])


def test_patches_across_the_raster_edge_are_clipped():
    maps = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6)
    row_off, col_off = np.array([-3, 6]), np.array([-2, 7])
    mosaic = mosaic_sensitivity(maps, row_off, col_off, 10, 11)
    # Sample 0: origin (-3, -2), so grid (0, 0) is map pixel (3, 2).
    assert mosaic[0, 0] == maps[0, 3, 2]
    # Sample 1: origin (6, 7), so grid (9, 10) is map pixel (3, 3); rows 10-11 are dropped.
    assert mosaic[9, 10] == maps[1, 3, 3]
    np.testing.assert_array_equal(mosaic, brute_force_mosaic(maps, row_off, col_off, 10, 11))


def test_nan_in_a_map_contributes_nothing():
    maps = np.stack([np.full((3, 3), 2.0), np.full((3, 3), 4.0)])
    maps[1, 1, 1] = np.nan
    mosaic = mosaic_sensitivity(maps, np.array([0, 0]), np.array([0, 0]), 3, 3)
    assert mosaic[1, 1] == 2.0 and mosaic[0, 0] == 3.0


def test_accumulate_window_matches_the_full_grid():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(30, 9, 9)).astype(np.float32)
    row_off, col_off = rng.integers(-8, 40, 30), rng.integers(-8, 50, 30)
    total, count = accumulate_window(maps, row_off, col_off, Window(0, 0, 50, 40))
    part_total, part_count = accumulate_window(maps, row_off, col_off, Window(13, 7, 20, 25))
    np.testing.assert_allclose(part_total, total[7:32, 13:33])
    np.testing.assert_array_equal(part_count, count[7:32, 13:33])


@pytest.mark.parametrize("tile_px", [16, 32, 512])
def test_written_raster_equals_the_oracle_on_the_imagery_grid(tmp_path, tile_px):
    rng = np.random.default_rng(1)
    height, width = 70, 90
    maps = rng.normal(size=(40, 12, 12)).astype(np.float32)
    row_off, col_off = rng.integers(-11, height, 40), rng.integers(-11, width, 40)
    path = write_sensitivity(
        tmp_path / "sensitivity" / "north.tif",
        maps,
        row_off,
        col_off,
        transform=TRANSFORM,
        crs=CRS,
        width=width,
        height=height,
        tile_px=tile_px,
    )
    with rasterio.open(path) as src:
        assert (src.width, src.height, src.count) == (width, height, 1)
        assert src.transform == TRANSFORM and src.crs.to_epsg() == 32649
        assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
        data = src.read(1)
        mask = src.read_masks(1)
    expected = brute_force_mosaic(maps, row_off, col_off, height, width)
    np.testing.assert_allclose(data, expected, rtol=1e-6, atol=1e-6, equal_nan=True)
    assert np.array_equal(mask > 0, np.isfinite(expected))
    assert np.isnan(data).any() and np.isfinite(data).any()
    assert sorted(p.name for p in path.parent.iterdir()) == ["north.qml", "north.tif"]
    # a Cloud-Optimised GeoTIFF, whatever tile_px the mosaic was built with
    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.overviews(1) and src.profile["tiled"]
        assert src.tags()["QUANTITY"].startswith("occlusion sensitivity")


def test_sensitivity_style_is_a_diverging_ramp_centred_on_zero(tmp_path):
    import xml.etree.ElementTree as ET

    maps = np.concatenate([np.full((1, 8, 8), 3.0), np.full((1, 8, 8), -0.5)]).astype(np.float32)
    path = write_sensitivity(
        tmp_path / "s.tif", maps, np.array([0, 20]), np.array([0, 20]),
        transform=TRANSFORM, crs=CRS, width=40, height=40, tile_px=16,
    )  # fmt: skip
    qml = path.with_suffix(".qml").read_text()
    items = ET.fromstring(qml.split("\n", 1)[1]).findall(".//colorrampshader/item")
    values = [float(i.get("value")) for i in items]
    assert values[0] == -values[-1] == pytest.approx(-3.0)  # symmetric around 0
    assert values[len(values) // 2] == pytest.approx(0.0)
    assert items[len(items) // 2].get("color") in ("#f7f7f7", "#f6f7f7", "#f7f6f6")  # white


def test_memmapped_maps_work_and_untouched_tiles_are_nodata(tmp_path):
    maps = np.lib.format.open_memmap(tmp_path / "maps.npy", "w+", np.float32, (2, 8, 8))
    maps[:] = 0.5
    path = write_sensitivity(
        tmp_path / "s.tif",
        maps,
        np.array([0, 1]),
        np.array([0, 2]),
        transform=TRANSFORM,
        crs=CRS,
        width=64,
        height=48,
        tile_px=16,
    )
    with rasterio.open(path) as src:
        data = src.read(1)
    assert np.all(data[:9, :10][np.isfinite(data[:9, :10])] == 0.5)
    assert np.isnan(data[16:, :]).all() and np.isnan(data[:, 16:]).all()


def test_an_interrupted_write_leaves_nothing(tmp_path):
    class Failing:
        """Maps that fail half-way, like a crash during the run."""

        shape = (3, 4, 4)

        def __len__(self):
            return 3

        def __getitem__(self, i):
            if i == 2:
                raise RuntimeError("interrupted")
            return np.ones((4, 4), np.float32)

    with pytest.raises(RuntimeError, match="interrupted"):
        write_sensitivity(
            tmp_path / "s.tif",
            Failing(),
            np.array([0, 0, 28]),
            np.array([0, 0, 28]),
            transform=TRANSFORM,
            crs=CRS,
            width=40,
            height=40,
            tile_px=16,
        )
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_refused(tmp_path):
    maps = np.ones((2, 4, 4))
    with pytest.raises(ValueError, match="2 maps"):
        mosaic_sensitivity(maps, np.array([1]), np.array([1, 2]), 5, 5)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        mosaic_sensitivity(np.ones((4, 4)), np.array([1] * 4), np.array([1] * 4), 5, 5)
    with pytest.raises(ValueError, match="multiple of 16"):
        write_sensitivity(
            tmp_path / "s.tif",
            maps,
            np.array([1, 2]),
            np.array([1, 2]),
            transform=TRANSFORM,
            crs=CRS,
            width=5,
            height=5,
            tile_px=100,
        )


def test_a_region_without_maps_is_all_nodata(tmp_path):
    empty = np.zeros((0, 8, 8), np.float32)
    none = np.zeros(0, np.int64)
    grid = {"transform": TRANSFORM, "crs": CRS, "width": 20, "height": 18, "tile_px": 16}
    path = write_sensitivity(tmp_path / "s.tif", empty, none, none, **grid)
    with rasterio.open(path) as src:
        assert np.isnan(src.read(1)).all()


def test_expected_map_is_the_nan_mean_at_each_offset():
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(300, 6, 5))
    maps[rng.random(maps.shape) < 0.2] = np.nan
    maps[:, 0, 0] = np.nan  # an offset no map has a value at
    expected = expected_map(maps, chunk=64)  # several chunks
    oracle = np.nanmean(maps[:, 1:, :], axis=0)
    np.testing.assert_allclose(expected[1:], oracle, rtol=1e-12)
    assert expected[0, 0] == 0.0


def test_relative_mosaic_is_the_mean_of_maps_minus_the_expected_map(tmp_path):
    rng = np.random.default_rng(4)
    height, width = 50, 60
    maps = rng.normal(size=(30, 12, 12)).astype(np.float32)
    row_off, col_off = rng.integers(-6, height, 30), rng.integers(-6, width, 30)
    oracle = brute_force_mosaic(maps - np.nanmean(maps, axis=0), row_off, col_off, height, width)
    in_memory = mosaic_sensitivity(maps, row_off, col_off, height, width, "relative")
    np.testing.assert_allclose(in_memory, oracle, rtol=1e-5, atol=1e-6, equal_nan=True)
    path = write_sensitivity(
        tmp_path / "s.tif",
        maps,
        row_off,
        col_off,
        transform=TRANSFORM,
        crs=CRS,
        width=width,
        height=height,
        tile_px=16,
        aggregation="relative",
    )
    with rasterio.open(path) as src:
        np.testing.assert_allclose(src.read(1), oracle, rtol=1e-5, atol=1e-6, equal_nan=True)
        assert src.tags(1)["AGGREGATION"] == "relative"


def test_relative_mosaic_removes_the_blob_every_sample_shares_and_keeps_the_rest():
    """Every map has the same centre blob; one place is extra sensitive for all its samples."""
    size, height, width = 9, 40, 40
    yy, xx = np.mgrid[:size, :size] - size // 2
    blob = np.exp(-(yy**2 + xx**2) / 4.0)
    rng = np.random.default_rng(5)
    row_off, col_off = rng.integers(0, height - size, 60), rng.integers(0, width - size, 60)
    source = (20, 20)
    maps = np.repeat(blob[None], 60, axis=0)
    for i, (r, c) in enumerate(zip(row_off, col_off, strict=True)):
        y, x = source[0] - r, source[1] - c
        if 0 <= y < size and 0 <= x < size:
            maps[i, y, x] += 1.0
    plain = mosaic_sensitivity(maps, row_off, col_off, height, width, "mean")
    relative = mosaic_sensitivity(maps, row_off, col_off, height, width, "relative")
    # The plain mean is dominated by the blobs; the relative map peaks at the source.
    assert np.unravel_index(np.nanargmax(relative), relative.shape) == source
    covered = np.isfinite(relative)
    others = covered.copy()
    others[source] = False
    assert relative[source] > 5 * np.abs(relative[others]).max()
    assert np.nanstd(plain[others]) > 10 * np.nanstd(relative[others])


def test_an_unknown_aggregation_is_refused():
    maps = np.ones((2, 4, 4))
    with pytest.raises(ValueError, match="aggregation"):
        mosaic_sensitivity(maps, np.array([0, 1]), np.array([0, 1]), 5, 5, "median")


def test_weights_scale_each_map_but_not_the_count():
    """aggregation 'exceedance': a clean sample's map (weight 0) adds 0 where it covers."""
    maps = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 3.0)])
    weighted = mosaic_sensitivity(
        maps, np.array([0, 0]), np.array([0, 1]), 2, 4, weights=np.array([2.0, 0.0])
    )
    np.testing.assert_allclose(weighted[0], [2.0, 1.0, 0.0, np.nan])
