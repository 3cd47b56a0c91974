"""Sessions: order, bounded tasks in flight, errors, and the same rasters locally or on Dask."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from soilsource.data.patches import BandStats, extract_patches
from soilsource.errors import InputError
from soilsource.explain.mosaic import write_sensitivity
from soilsource.explain.sensitivity import sensitivity_maps
from soilsource.inputs.imagery import describe_raster
from soilsource.mapping.probability import write_probability_map
from soilsource.models.silicnet import random_silicnet
from soilsource.pipeline.runner import TASK_MODULES
from soilsource.runtime import _add_shared, compute_session

BANDS, PATCH_PX = 3, 24


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A small 3-band uint16 GeoTIFF with a nodata hole, a model, band stats, patches."""
    folder = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(0)
    h, w = 150, 131
    ramp = np.linspace(0, 3000, w)[None, None, :]
    data = (rng.normal(2000, 400, (BANDS, h, w)) + ramp).clip(1, 65535).astype(np.uint16)
    data[:, 40:70, 55:85] = 0  # nodata: more than half of the patches around (55, 70)
    path = folder / "image.tif"
    profile = dict(
        driver="GTiff", width=w, height=h, count=BANDS, dtype="uint16", nodata=0,
        crs="EPSG:32649", transform=from_origin(500000, 2500000, 10, 10),
        tiled=True, blockxsize=64, blockysize=64,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    raster = describe_raster(path)
    model = random_silicnet(BANDS, PATCH_PX)
    x = 500000 + 10 * rng.uniform(5, w - 5, 11)
    y = 2500000 - 10 * rng.uniform(5, h - 5, 11)
    patches = extract_patches(raster, np.column_stack([x, y]), PATCH_PX)
    return raster, model, BandStats.fit(patches), patches


@pytest.fixture(scope="module")
def cluster():
    """A Dask LocalCluster of two worker processes with one thread each."""
    pytest.importorskip("distributed")
    with compute_session(workers=2, threads_per_worker=1, preload=TASK_MODULES) as session:
        yield session


def _sensitivity(scene, session, path):
    raster, model, stats, patches = scene
    maps = sensitivity_maps(model, stats, patches, 8, 4, batch=3, session=session, progress=False)
    write_sensitivity(
        path, maps, patches.row_off, patches.col_off, transform=raster.transform,
        crs=raster.crs, width=raster.width, height=raster.height,
    )  # fmt: skip
    return maps


@pytest.mark.slow
def test_dask_cluster_gives_byte_identical_rasters(scene, cluster, tmp_path):
    raster, model, stats, _ = scene
    assert not cluster.is_local and cluster.slots == 2
    assert set(cluster.torch_threads.values()) == {1}  # 2 cores? -> 1; more cores: more
    local_prob, dask_prob = tmp_path / "local_p.tif", tmp_path / "dask_p.tif"
    write_probability_map(local_prob, model, stats, raster, tile_px=40, progress=False)
    write_probability_map(
        dask_prob, model, stats, raster, tile_px=40, progress=False, session=cluster
    )
    local_maps = _sensitivity(scene, None, tmp_path / "local_s.tif")
    dask_maps = _sensitivity(scene, cluster, tmp_path / "dask_s.tif")
    assert local_maps.tobytes() == dask_maps.tobytes()
    assert np.abs(local_maps).max() > 1e-4  # occlusion changes something
    for kind in ("p", "s"):
        with (
            rasterio.open(tmp_path / f"local_{kind}.tif") as a,
            rasterio.open(tmp_path / f"dask_{kind}.tif") as b,
        ):
            left, right = a.read(), b.read()
        assert left.tobytes() == right.tobytes()
        assert (tmp_path / f"local_{kind}.tif").read_bytes() == (
            tmp_path / f"dask_{kind}.tif"
        ).read_bytes()
    with rasterio.open(local_prob) as src:
        prob = src.read(1)
    assert np.isnan(prob[55, 70])  # most of its patch has no data
    assert np.nanstd(prob) > 0.02 and np.isfinite(prob).mean() > 0.8  # a map with structure


def test_the_map_does_not_depend_on_the_local_pool(scene, tmp_path):
    raster, model, stats, _ = scene
    one = write_probability_map(tmp_path / "a.tif", model, stats, raster, progress=False)
    with compute_session(local_threads=2, max_in_flight=2) as session:
        two = write_probability_map(
            tmp_path / "b.tif", model, stats, raster, progress=False, session=session
        )
    assert one.read_bytes() == two.read_bytes()


@pytest.mark.slow
def test_input_errors_from_tasks_arrive_as_input_errors(scene, cluster, tmp_path):
    raster, model, stats, _ = scene
    broken = tmp_path / "broken.tif"
    broken.write_bytes(raster.path.read_bytes()[:3000])  # truncated: blocks cannot be read
    bad = dataclasses.replace(raster, path=broken)
    for session in (None, cluster):
        with pytest.raises(InputError, match=r"broken\.tif"):
            write_probability_map(
                tmp_path / "p.tif", model, stats, bad, progress=False, session=session
            )
        assert not (tmp_path / "p.tif").exists()  # nothing half-written left in place


def test_results_come_in_task_order_with_bounded_tasks_in_flight():
    pulled, consumed, worst = 0, 0, 0

    def tasks():
        nonlocal pulled
        for k in range(20):
            pulled += 1
            yield k

    with compute_session(local_threads=2, max_in_flight=3) as session:
        results = []
        for result in session.map(_add_shared, tasks(), shared=100):
            worst = max(worst, pulled - consumed)
            consumed += 1
            results.append(result)
    assert results == list(range(100, 120))
    assert worst <= 3


def test_closing_early_cancels_and_local_session_restores_torch_threads():
    threads = torch.get_num_threads()
    with compute_session(local_threads=2) as session:
        assert session.is_local and "local" in session.describe()
        results = session.map(_add_shared, range(1000), shared=0)
        assert next(results) == 0
        results.close()
        assert threading.active_count() >= 1
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"scheduler": "tcp://127.0.0.1:9", "timeout": "1s"}, InputError),
        ({"local_threads": 0}, ValueError),
        ({"workers": 0}, ValueError),
    ],
)
def test_bad_sessions_are_refused(kwargs, error):
    with pytest.raises(error), compute_session(**kwargs):
        pass
