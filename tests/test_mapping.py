"""Dense probability maps: equal to patch-by-patch evaluation, edges and nodata, tiles."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from soilsource.mapping.probability import patch_halo, probability_map, probability_map_tile
from soilsource.models import SILICNet
from soilsource.models.silicnet import random_silicnet

TOL = 1e-4


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one thread avoids OpenMP contention on a busy shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def varied_model(channels: int, patch_px: int, seed: int = 0, **kwargs) -> SILICNet:
    """A random SI-LICNet whose probabilities spread over (0, 1) across an image."""
    return random_silicnet(channels, patch_px, seed=seed, centre_on=16, **kwargs)


def patch_by_patch(model: SILICNet, image: torch.Tensor) -> np.ndarray:
    """The definition: sigmoid(model(patch centred at (i, j))), NaN where it leaves the image."""
    size = model.patch_px
    _, h, w = image.shape
    before, after = size // 2, size - 1 - size // 2
    out = np.full((h, w), np.nan, np.float32)
    with torch.no_grad():
        for i in range(before, h - after):
            patches = torch.stack(
                [
                    image[:, i - before : i - before + size, j - before : j - before + size]
                    for j in range(before, w - after)
                ]
            )
            out[i, before : w - after] = torch.sigmoid(model(patches)).numpy()
    return out


def smooth_image(channels: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Noise plus a gradient, so probabilities vary across the image."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(-2, 2, w).expand(h, w)
    return torch.randn(channels, h, w, generator=g) + ramp


@pytest.mark.parametrize(
    ("channels", "patch_px", "h", "w", "tile_px", "kwargs"),
    [
        (3, 24, 61, 50, 16, {}),  # several tiles, the last ones partial
        (2, 27, 45, 60, 7, {}),  # odd patch, odd tiles
        (4, 32, 70, 71, 512, {}),  # one tile
        (3, 16, 30, 33, 5, {}),  # a shallow model (one block)
        (2, 22, 40, 41, 9, {"antialias": False, "batchnorm": False}),  # plain 2 x 2 stem
        (3, 24, 44, 40, 11, {"members": 3}),  # an ensemble of three in one module
        (3, 24, 45, 40, 13, {"n_sectors": 4}),  # rings cut into quadrants (odd grid)
        (2, 26, 40, 44, 512, {"n_sectors": 4, "members": 2}),  # quadrants, even grid, ensemble
    ],
)
def test_dense_map_equals_patch_by_patch(channels, patch_px, h, w, tile_px, kwargs):
    model = varied_model(channels, patch_px, seed=patch_px, **kwargs)
    image = smooth_image(channels, h, w)
    expected = patch_by_patch(model, image)
    assert np.nanstd(expected) > 0.03  # a map with structure, not a constant
    got = probability_map(model, image, patch_px, tile_px=tile_px)
    assert got.shape == (h, w)
    assert got.dtype == np.float32
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    assert np.nanmax(np.abs(got - expected)) < TOL


def test_edges_are_nan_exactly_where_the_patch_leaves_the_image():
    model = varied_model(2, 16)
    got = probability_map(model, np.zeros((2, 40, 30), np.float32))
    before, after = patch_halo(16)
    assert (before, after) == (8, 7)
    valid = np.zeros((40, 30), bool)
    valid[before : 40 - after, before : 30 - after] = True
    assert np.array_equal(~np.isnan(got), valid)


def test_nodata_blanks_only_the_patches_that_contain_it():
    model = varied_model(2, 16, seed=1)
    image = smooth_image(2, 40, 44).numpy()
    clean = probability_map(model, image)
    image[1, 20, 25] = np.nan
    got = probability_map(model, image, tile_px=9)
    hit = np.zeros_like(clean, dtype=bool)
    hit[20 - 7 : 20 + 9, 25 - 7 : 25 + 9] = True  # centres whose patch holds (20, 25)
    assert np.isnan(got[hit]).all()
    keep = ~hit & ~np.isnan(clean)
    assert np.array_equal(~np.isnan(got), keep)
    assert np.max(np.abs(got[keep] - clean[keep])) < 1e-6


def test_a_tile_from_its_window_equals_the_map():
    model = varied_model(3, 20, seed=2)
    image = smooth_image(3, 50, 60)
    full = probability_map(model, image)
    before, after = patch_halo(20)
    r0, r1, c0, c1 = 15, 31, 22, 40  # output tile: rows 15..30, columns 22..39
    window = image[:, r0 - before : r1 + after, c0 - before : c1 + after]
    tile = probability_map_tile(model, window, 20)
    assert tile.shape == (r1 - r0, c1 - c0)
    assert np.max(np.abs(tile - full[r0:r1, c0:c1])) < 1e-6


def test_small_images_give_empty_tiles_and_all_nan_maps():
    model = varied_model(2, 16)
    assert probability_map_tile(model, np.zeros((2, 15, 40), np.float32)).shape == (0, 25)
    assert np.isnan(probability_map(model, np.zeros((2, 15, 40), np.float32))).all()


def test_model_mode_is_restored():
    model = varied_model(2, 16).train()
    probability_map(model, np.zeros((2, 20, 20), np.float32))
    assert model.training


@pytest.mark.parametrize(
    ("image", "kwargs", "error", "match"),
    [
        (np.zeros((3, 30, 30), np.float32), {}, ValueError, "bands"),
        (np.zeros((2, 30, 30), np.float32), {"patch_px": 18}, ValueError, "built for 16"),
        (np.zeros((30, 30), np.float32), {}, ValueError, r"\(C, H, W\)"),
        (np.zeros((2, 30, 30), np.float32), {"tile_px": 0}, ValueError, "tile_px"),
    ],
)
def test_bad_inputs_are_refused(image, kwargs, error, match):
    with pytest.raises(error, match=match):
        probability_map(varied_model(2, 16), image, **kwargs)


def test_only_silicnet_maps_densely():
    with pytest.raises(TypeError, match="SILICNet"):
        probability_map(nn.Conv2d(2, 1, 3), np.zeros((2, 30, 30), np.float32))


def test_raw_map_is_the_model_output_and_its_sigmoid_the_probability():
    model = varied_model(2, 16, seed=3, members=2)
    image = smooth_image(2, 30, 28)
    raw = probability_map(model, image, raw=True)
    prob = probability_map(model, image)
    ok = np.isfinite(raw)
    assert np.nanmax(np.abs(1 / (1 + np.exp(-raw[ok])) - prob[ok])) < 1e-5
    i, j = 15, 14
    patch = image[:, i - 8 : i + 8, j - 8 : j + 8][None]
    with torch.no_grad():
        assert raw[i, j] == pytest.approx(model(patch).item(), abs=1e-4)


def test_a_ph_raster_gives_each_pixel_its_own_gb15618_limits(tmp_path):
    """mapping.ph: limits from each pixel's pH (paddy and other land by the paddy share)."""
    from soilsource.data.labels import gb15618_screening_value
    from soilsource.data.patches import BandStats, Patches
    from soilsource.data.target import LogNormalLink
    from soilsource.inputs import describe_raster
    from soilsource.mapping.probability import MapRule, write_probability_map
    from tinyinputs import write_raster

    rng = np.random.default_rng(0)
    image = write_raster(tmp_path / "image.tif", rng.normal(100, 10, (2, 48, 48)).astype("float32"))
    ph = np.full((48, 48), 5.0, np.float32)
    ph[:, 24:] = 8.0  # the east half is alkaline: higher Cd limits
    ph[20:24, 40:44] = -1.0  # nodata: no probability there
    ph_path = write_raster(tmp_path / "ph.tif", ph, nodata=-1.0)
    raster = describe_raster(image)
    model = varied_model(2, 16, seed=1)
    stats = BandStats.fit(
        Patches(rng.normal(100, 10, (4, 2, 16, 16)).astype("float32"), np.ones((4, 16, 16), bool),
                np.zeros(4, int), np.zeros(4, int), np.arange(4), ("a", "b"))
    )  # fmt: skip
    link = LogNormalLink(np.log(0.3), 1.0, 0.8)
    by_pixel = MapRule(link, (), (0.25, 0.75), ph_path=ph_path, metal="Cd")
    write_probability_map(tmp_path / "p.tif", model, stats, raster, rule=by_pixel,
                          concentration_path=tmp_path / "c.tif", progress=False)  # fmt: skip
    for where, value in ((np.s_[20:28, 8:16], 5.0), (np.s_[20:28, 32:40], 8.0)):
        paddy, other = gb15618_screening_value("Cd", np.array([value, value]), np.array([1, 0]))
        fixed = MapRule(link, (float(paddy), float(other)), (0.25, 0.75))
        write_probability_map(tmp_path / "f.tif", model, stats, raster, rule=fixed,
                              progress=False)  # fmt: skip
        with rasterio.open(tmp_path / "p.tif") as a, rasterio.open(tmp_path / "f.tif") as b:
            got, expected = a.read(1)[where], b.read(1)[where]
            assert "PH_RASTER" in a.tags()
        assert np.isfinite(got).all() and np.allclose(got, expected, atol=1e-6)
        (tmp_path / "f.tif").unlink()
    with rasterio.open(tmp_path / "p.tif") as src:
        prob = src.read(1)
    assert np.isnan(prob[21:23, 41:43]).all() and np.isfinite(prob[30:34, 30:34]).all()
    assert np.nanmean(prob[:, 30:40]) < np.nanmean(prob[:, 8:18])  # higher limits, lower risk
