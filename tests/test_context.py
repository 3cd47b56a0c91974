"""Context bands: the bands smoothed over hundreds of metres, cached beside the imagery."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from scipy import ndimage

import tinyinputs
from soilsource.config import PatchConfig
from soilsource.data.context import (
    context_band_names,
    context_of,
    imagery_without_context,
    smoothed_grid,
    with_context,
)
from soilsource.inputs.imagery import describe_raster, imagery_record


def _raster(tmp_path, data, **kw):
    kw.setdefault("descriptions", ("blue", "red", "nir")[: data.shape[0]])
    return describe_raster(tinyinputs.write_raster(tmp_path / "img.tif", data, **kw))


def test_bands_are_kept_exactly_and_the_context_follows_them(tmp_path):
    data = tinyinputs.imagery_data()
    raster = _raster(tmp_path, data, nodata=0, scales=(1e-4,) * 3, offsets=(0.0,) * 3)
    derived = with_context(raster, [80.0], tmp_path / "cache")
    assert derived.band_names == context_band_names(raster.band_names, [80.0])
    assert derived.count == 6 and derived.dtype == "float32"
    assert derived.scales == (1e-4,) * 6 and derived.offsets == (0.0,) * 6
    with rasterio.open(derived.read_path) as src:
        values = src.read()
    hole = data[0] == 0
    assert np.isnan(values[:, hole]).all()  # nodata stays nodata in every band
    np.testing.assert_array_equal(values[:3, ~hole], data[:, ~hole].astype(np.float32))
    assert np.isfinite(values[:, ~hole]).all()
    # the context is a smooth average: within the band's range, far less variable
    assert values[3:, ~hole].std() < 0.2 * values[:3, ~hole].std()
    assert np.nanmin(values[3:]) >= 100 and np.nanmax(values[3:]) <= 4000


def test_nodata_and_the_edge_do_not_darken_the_context(tmp_path):
    data = np.full((1, 64, 64), 700, np.uint16)
    data[0, 20:30, 20:30] = 0  # a nodata hole
    derived = with_context(_raster(tmp_path, data, nodata=0), [100.0], tmp_path / "cache")
    with rasterio.open(derived.read_path) as src:
        context = src.read(2)
    valid = data[0] > 0
    np.testing.assert_allclose(context[valid], 700.0, rtol=1e-5)


def test_context_matches_a_full_resolution_gaussian(tmp_path):
    """The reduced grid (4 cells per sigma) and bilinear read-back stay within 2 % of a
    Gaussian computed on every pixel, away from the edges."""
    rng = np.random.default_rng(3)
    field = ndimage.gaussian_filter(rng.normal(0, 1, (128, 128)), 6) * 4000 + 2000
    data = np.clip(field, 1, None).astype(np.uint16)[None]
    sigma_m = 200.0  # 20 px of 10 m: 5 px per cell
    derived = with_context(_raster(tmp_path, data), [sigma_m], tmp_path / "cache")
    with rasterio.open(derived.read_path) as src:
        context = src.read(2)
    exact = ndimage.gaussian_filter(data[0].astype(float), sigma_m / 10.0, mode="constant")
    exact /= ndimage.gaussian_filter(np.ones((128, 128)), sigma_m / 10.0, mode="constant")
    inner = (slice(24, -24), slice(24, -24))
    np.testing.assert_allclose(context[inner], exact[inner], rtol=0.02)


def test_the_derived_raster_is_cached_by_imagery_and_scales(tmp_path):
    raster = _raster(tmp_path, tinyinputs.imagery_data(), nodata=0)
    first = with_context(raster, [80.0], tmp_path / "cache")
    stamp = first.read_path.stat().st_mtime_ns
    again = with_context(raster, [80.0], tmp_path / "cache")
    assert again.read_path == first.read_path and again.read_path.stat().st_mtime_ns == stamp
    other = with_context(raster, [80.0, 160.0], tmp_path / "cache")
    assert other.read_path != first.read_path and other.count == 9
    assert with_context(raster, [], tmp_path / "cache") is raster
    edited = _raster(tmp_path, tinyinputs.imagery_data(seed=1), nodata=0)  # same file, new pixels
    assert with_context(edited, [80.0], tmp_path / "cache").read_path != first.read_path
    assert sorted(p.suffix for p in (tmp_path / "cache" / "context").iterdir()) == [".tif"] * 3


def test_smoothed_grid_is_nan_where_no_valid_pixel_is_near(tmp_path):
    data = np.zeros((1, 64, 64), np.uint16)
    data[0, :8, :8] = 500
    raster = _raster(tmp_path, data, nodata=0)
    with rasterio.open(raster.path) as src:
        grid, _ = smoothed_grid(src, 20.0, raster.pixel_size_m)
    assert np.isfinite(grid[0, 0, 0]) and np.isnan(grid[0, -1, -1])


def test_the_record_of_the_users_imagery_leaves_the_context_out(tmp_path):
    raster = _raster(tmp_path, tinyinputs.imagery_data(), nodata=0)
    derived = with_context(raster, [80.0], tmp_path / "cache")
    record = imagery_record(derived)
    assert context_of(record) == [80.0] and context_of(imagery_record(raster)) == []
    bare = imagery_without_context(record)
    assert bare["band_names"] == list(raster.band_names) and bare["count"] == 3
    assert bare["scales"] == list(raster.scales)
    assert imagery_without_context(imagery_record(raster)) == imagery_record(raster)


def test_scales_are_distinct_positive_and_sorted():
    assert PatchConfig(context_m=[1000, 250]).context_m == [250.0, 1000.0]
    for bad in ([500, 500], [0], [-1], [1, 2, 3, 4, 5]):
        with pytest.raises(ValueError):
            PatchConfig(context_m=bad)


def test_unreadable_pixels_and_an_unwritable_cache_are_one_line_each(tmp_path):
    from soilsource.errors import InputError

    raster = _raster(tmp_path, tinyinputs.imagery_data(), nodata=0)
    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    with pytest.raises(InputError, match="cannot write the context bands") as found:
        with_context(raster, [80.0], tmp_path / "blocked")
    assert str(tmp_path / "blocked") in str(found.value)
    with rasterio.open(raster.path) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(raster.path, "w", **(profile | {"compress": "deflate"})) as dst:
        dst.write(data)
    raw = bytearray(raster.path.read_bytes())
    for k in range(3000, len(raw) - 3000, 5):  # the header reads, the tiles do not
        raw[k] = (raw[k] * 31 + 7) % 256
    raster.path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="cannot read pixels") as found:
        with_context(raster, [80.0], tmp_path / "cache")
    assert str(raster.path) in str(found.value)
    assert not list((tmp_path / "cache" / "context").glob("*"))  # nothing half-written


def test_no_room_for_the_context_bands_is_found_before_any_work(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from soilsource.data.context import check_context_space, context_path
    from soilsource.errors import InputError

    raster = _raster(tmp_path, tinyinputs.imagery_data(), nodata=0)
    need = 64 * 64 * 3 * 3 * 4  # pixels x bands x (1 + 2 scales) x float32
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(0, 0, need - 1))
    with pytest.raises(InputError, match=r"take up to [0-9.]+ MiB here") as found:
        check_context_space([raster], [80.0, 160.0], tmp_path / "cache")
    assert "patch.context_m: []" in str(found.value)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(0, 0, need))
    check_context_space([raster], [80.0, 160.0], tmp_path / "cache")
    check_context_space([raster], [], tmp_path / "cache")
    monkeypatch.undo()
    with_context(raster, [80.0, 160.0], tmp_path / "cache")
    assert context_path(raster, [80.0, 160.0], tmp_path / "cache").is_file()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(0, 0, 0))
    check_context_space([raster], [80.0, 160.0], tmp_path / "cache")  # cached: needs nothing


def test_a_runs_occlusion_holds_the_context_bands_unless_asked(tmp_path):
    """explain.occlude_context off: the run's maps equal occlusion with the context
    channels held; on (the default): occlusion of every channel (band-mean baseline)."""
    import torch

    from soilsource.config import load_config
    from soilsource.data.dataset import load_dataset
    from soilsource.explain.occlusion import occlusion_sensitivity
    from soilsource.explain.sensitivity import occlusion_baseline
    from soilsource.learn.training import TrainSettings
    from soilsource.pipeline.runner import MODEL, evaluate, final_model, sensitivity_maps

    config = load_config(tinyinputs.write_project(tmp_path))
    config.patch.context_m = [80.0]
    config.model.pretrain, config.model.baselines = False, []
    config.explain.occlude_with = "mean"
    dataset = load_dataset(config)
    cv = evaluate(dataset, config, settings=TrainSettings(max_epochs=1))[MODEL]
    region = dataset.regions[0]
    model = final_model(cv, region.name)
    patches = region.patches.subset(range(3))
    net, stats = model.inner.module, model.stats_
    x = torch.from_numpy(stats.transform(patches))
    held = tuple(range(3, 6))  # 3 bands, then their context
    for occlude, base in ((False, occlusion_baseline(x, 0.0, held)), (True, 0.0)):
        config.explain.occlude_context = occlude
        got = sensitivity_maps(model, patches, config, 10.0)
        want = occlusion_sensitivity(net, x, 16, 4, base, output="raw").numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)
