"""Sensitivity mosaics: known answers, agreement with a brute-force oracle, the file itself."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from soilsource.explain.mosaic import (
    accumulate_window,
    mosaic_sensitivity,
    patch_origins,
    write_sensitivity,
)

TRANSFORM = from_origin(500_000.0, 2_560_000.0, 10.0, 10.0)
CRS = "EPSG:32649"


def brute_force_mosaic(maps, rows, cols, height, width):
    """Independent oracle: paste every patch into a padded canvas, then crop."""
    _, ph, pw = maps.shape
    pad_y, pad_x = ph, pw
    total = np.zeros((height + 2 * pad_y, width + 2 * pad_x))
    count = np.zeros_like(total)
    for m, r, c in zip(maps, rows, cols, strict=True):
        top, left = r - ph // 2 + pad_y, c - pw // 2 + pad_x
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
    # Patch 1 centred on (4, 4) covers rows/cols 2..5; patch 2 centred on (6, 6) covers 4..7.
    mosaic = mosaic_sensitivity(maps, np.array([4, 6]), np.array([4, 6]), 10, 10)
    assert mosaic.dtype == np.float32
    assert np.all(mosaic[4:6, 4:6] == 3.0)  # overlap: mean of 1 and 5
    assert mosaic[2, 2] == 1.0 and mosaic[3, 5] == 1.0
    assert mosaic[7, 7] == 5.0 and mosaic[6, 4] == 5.0
    covered = np.zeros((10, 10), bool)
    covered[2:6, 2:6] = covered[4:8, 4:8] = True
    assert np.array_equal(np.isfinite(mosaic), covered)


@pytest.mark.parametrize(("size", "first"), [(4, 8), (5, 8), (1, 10)])
def test_patch_convention_for_even_and_odd_sizes(size, first):
    r0, c0 = patch_origins(np.array([10]), np.array([10]), (size, size))
    assert (r0[0], c0[0]) == (first, first)
    mosaic = mosaic_sensitivity(np.ones((1, size, size)), np.array([10]), np.array([10]), 20, 20)
    rows = np.flatnonzero(np.isfinite(mosaic[:, 10]))
    assert rows[0] == first and rows[-1] == first + size - 1


def test_patches_across_the_raster_edge_are_clipped():
    maps = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6)
    rows, cols = np.array([0, 9]), np.array([1, 10])
    mosaic = mosaic_sensitivity(maps, rows, cols, 10, 11)
    # Sample 0: origin (-3, -2), so grid (0, 0) is map pixel (3, 2).
    assert mosaic[0, 0] == maps[0, 3, 2]
    # Sample 1: origin (6, 7), so grid (9, 10) is map pixel (3, 3); rows 10-11 are dropped.
    assert mosaic[9, 10] == maps[1, 3, 3]
    np.testing.assert_array_equal(mosaic, brute_force_mosaic(maps, rows, cols, 10, 11))


def test_nan_in_a_map_contributes_nothing():
    maps = np.stack([np.full((3, 3), 2.0), np.full((3, 3), 4.0)])
    maps[1, 1, 1] = np.nan
    mosaic = mosaic_sensitivity(maps, np.array([1, 1]), np.array([1, 1]), 3, 3)
    assert mosaic[1, 1] == 2.0 and mosaic[0, 0] == 3.0


def test_accumulate_window_matches_the_full_grid():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(30, 9, 9)).astype(np.float32)
    rows, cols = rng.integers(-4, 44, 30), rng.integers(-4, 54, 30)
    total, count = accumulate_window(maps, rows, cols, Window(0, 0, 50, 40))
    part_total, part_count = accumulate_window(maps, rows, cols, Window(13, 7, 20, 25))
    np.testing.assert_allclose(part_total, total[7:32, 13:33])
    np.testing.assert_array_equal(part_count, count[7:32, 13:33])


@pytest.mark.parametrize("tile_px", [16, 32, 512])
def test_written_raster_equals_the_oracle_on_the_imagery_grid(tmp_path, tile_px):
    rng = np.random.default_rng(1)
    height, width = 70, 90
    maps = rng.normal(size=(40, 12, 12)).astype(np.float32)
    rows, cols = rng.integers(-5, height + 5, 40), rng.integers(-5, width + 5, 40)
    path = write_sensitivity(
        tmp_path / "sensitivity" / "north.tif",
        maps,
        rows,
        cols,
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
    expected = brute_force_mosaic(maps, rows, cols, height, width)
    np.testing.assert_allclose(data, expected, rtol=1e-6, atol=1e-6, equal_nan=True)
    assert np.array_equal(mask > 0, np.isfinite(expected))
    assert np.isnan(data).any() and np.isfinite(data).any()
    assert sorted(p.name for p in path.parent.iterdir()) == ["north.tif"]


def test_memmapped_maps_work_and_untouched_tiles_are_nodata(tmp_path):
    maps = np.lib.format.open_memmap(tmp_path / "maps.npy", "w+", np.float32, (2, 8, 8))
    maps[:] = 0.5
    path = write_sensitivity(
        tmp_path / "s.tif",
        maps,
        np.array([4, 5]),
        np.array([4, 6]),
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
            np.array([2, 2, 30]),
            np.array([2, 2, 30]),
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
