"""The preflight (:mod:`soilsource.pipeline.preflight`): valid unusual inputs pass it, and ``run``
trains on the dataset it built (each patch read once).

Bad inputs are the corpus's (``tests/badinputs/``, through ``check`` and ``run``); here are
the inputs that look odd but are fine: overlapping scenes, one region's scenes in two
CRSs, NaN or undeclared nodata, one band or thirteen, samples on the raster edge, samples
at the same place, Unicode and spaces in paths and region names.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from pyproj import Transformer

import soilsource.data.dataset
import soilsource.pipeline.runner
from soilsource.errors import InputError
from soilsource.pipeline.preflight import FREE_DISK_ENV, output_bytes, plan
from soilsource.rundir import LOCK_FILE
from tinyinputs import (
    BAND_NAMES,
    CRS_UTM,
    ORIGIN,
    PIXEL_M,
    SIZE,
    imagery_data,
    sample_table,
    snapshot,
    write_project,
    write_raster,
)


def edit_config(config, change) -> None:
    raw = yaml.safe_load(config.read_text())
    change(raw)
    config.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))


def usable(found) -> int:
    return sum(r.n_usable for r in found.regions)


def test_plan_of_the_tiny_project_writes_nothing(tmp_path):
    config = write_project(tmp_path)
    before = snapshot(tmp_path)
    found = plan(config, tmp_path / "out")
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()
    assert usable(found) == 20 and [r.name for r in found.dataset] == ["r1", "r2"]
    assert found.out == tmp_path / "out"
    assert found.output_bytes == output_bytes(found.dataset, found.config) > SIZE * SIZE * 24
    assert not found.warnings


def test_overlapping_scenes_each_sample_reads_the_first(tmp_path):
    config = write_project(tmp_path)
    data = imagery_data()
    write_raster(tmp_path / "west.tif", data[:, :, :40], nodata=0, descriptions=BAND_NAMES)
    east = (ORIGIN[0] + 24 * PIXEL_M, ORIGIN[1])  # columns 24-63: 16 columns overlap
    write_raster(tmp_path / "east.tif", data[:, :, 24:], nodata=0, descriptions=BAND_NAMES,
                 origin=east)  # fmt: skip
    edit_config(config, lambda c: c["imagery"].__setitem__("path", ["west.tif", "east.tif"]))
    found = plan(config)
    assert all(r.n_outside == 0 for r in found.regions)
    rasters = np.concatenate([r.table["raster"].to_numpy() for r in found.dataset])
    assert set(rasters) == {0, 1}


def two_crs_project(tmp_path):
    """The tiny project with its imagery in two scenes: west in UTM, east in Web Mercator."""
    config = write_project(tmp_path)
    data = imagery_data()
    write_raster(tmp_path / "west.tif", data[:, :, :32], nodata=0, descriptions=BAND_NAMES)
    corner = Transformer.from_crs(CRS_UTM, "EPSG:3857", always_xy=True).transform(
        ORIGIN[0] + 32 * PIXEL_M, ORIGIN[1]
    )
    write_raster(tmp_path / "east.tif", data[:, :, 32:], nodata=0, descriptions=BAND_NAMES,
                 crs="EPSG:3857", origin=corner)  # fmt: skip
    edit_config(config, lambda c: c["imagery"].__setitem__("path", ["west.tif", "east.tif"]))
    return config


def test_one_regions_scenes_in_two_crss(tmp_path):
    """Each sample is reprojected into its own scene's CRS; 10 m pixels in both, so one
    patch size."""
    found = plan(two_crs_project(tmp_path))
    assert {r.crs.to_epsg() for region in found.dataset for r in region.rasters} == {32649, 3857}
    assert found.dataset.patch_px == 16
    assert usable(found) >= 18  # a few near the Mercator scene's skewed edge may drop


def test_nan_nodata_is_honoured(tmp_path):
    config = write_project(tmp_path)
    data = imagery_data().astype(np.float32)
    data[:, :, :30] = np.nan  # the west half without data, declared as NaN
    write_raster(tmp_path / "imagery.tif", data, nodata=np.nan, descriptions=BAND_NAMES)
    found = plan(config)
    assert 0 < sum(r.n_nodata for r in found.regions) < 20
    assert any("left out (nodata)" in w for w in found.warnings)
    for region in found.dataset:  # NaN pixels are invalid, valid ones are numbers
        patches = region.patches.read()
        assert np.isfinite(patches.data.transpose(1, 0, 2, 3)[:, patches.valid]).all()
        assert not np.isnan(patches.data).any() or not patches.valid.all()


def test_undeclared_nodata_is_a_warning(tmp_path):
    config = write_project(tmp_path)
    write_raster(tmp_path / "imagery.tif", imagery_data(), descriptions=BAND_NAMES)  # no nodata
    found = plan(config)
    assert any("imagery.tif declares no nodata value" in w for w in found.warnings)
    assert sum(r.n_nodata for r in found.regions) == 0  # zeros count as data


@pytest.mark.parametrize("bands", [1, 13])
def test_one_band_or_thirteen(tmp_path, bands):
    config = write_project(tmp_path)
    rng = np.random.default_rng(bands)
    data = rng.integers(100, 4000, size=(bands, SIZE, SIZE), dtype=np.uint16)
    names = tuple(f"B{i + 1:02d}" for i in range(bands))
    write_raster(tmp_path / "imagery.tif", data, nodata=0, descriptions=names)
    found = plan(config)
    assert found.dataset.band_names == names and usable(found) == 20
    assert found.dataset.regions[0].patches.read().data.shape[1] == bands


def test_samples_on_the_raster_edge(tmp_path):
    """A sample on the last pixel column is inside; its patch is half outside the raster
    (50 %, kept at the default max_nodata_share); one on the corner pixel is 75 % outside
    and is left out with a warning; one just beyond the edge is outside."""
    config = write_project(tmp_path)
    table = sample_table()
    to_lonlat = Transformer.from_crs(CRS_UTM, "EPSG:4326", always_xy=True)
    edge_y = ORIGIN[1] - 32.5 * PIXEL_M
    points = {
        0: (ORIGIN[0] + 63.5 * PIXEL_M, edge_y),  # last column, mid height
        2: (ORIGIN[0] + 63.5 * PIXEL_M, ORIGIN[1] - 63.5 * PIXEL_M),  # corner pixel
        4: (ORIGIN[0] + 64.2 * PIXEL_M, edge_y),  # just outside
    }
    for row, (x, y) in points.items():
        table.loc[row, ["lon", "lat"]] = to_lonlat.transform(x, y)
    table.to_csv(tmp_path / "samples.csv", index=False)
    found = plan(config)
    outside = sum(r.n_outside for r in found.regions)
    assert (outside, sum(r.n_nodata for r in found.regions), usable(found)) == (1, 1, 18)
    kept = set(pd.concat([r.table for r in found.dataset])["sample_id"])
    assert "S000" in kept and not {"S002", "S004"} & kept


def test_duplicate_coordinates_are_kept_with_a_warning(tmp_path):
    config = write_project(tmp_path)
    table = sample_table()
    table.loc[5, ["lon", "lat"]] = table.loc[1, ["lon", "lat"]].to_numpy()
    table.to_csv(tmp_path / "samples.csv", index=False)
    found = plan(config)
    assert usable(found) == 20
    assert any("2 samples share their coordinates" in w and "rows 2, 6" in w
               for w in found.warnings)  # fmt: skip


def unicode_project(tmp_path):
    """The tiny project under a path with spaces and Unicode, regions named alike."""
    root = tmp_path / "données d'été" / "县 北"
    config = write_project(root)
    table = pd.read_csv(root / "samples.csv")
    table["region"] = table["region"].map({"r1": "Nord Süd", "r2": "东莞 北"})
    table.to_csv(root / "samples.csv", index=False)
    return config


def test_unicode_and_spaces_in_paths_and_region_names(tmp_path):
    found = plan(unicode_project(tmp_path))
    assert [r.name for r in found.dataset] == ["Nord Süd", "东莞 北"]
    assert usable(found) == 20


def test_run_trains_on_the_preflights_dataset_reading_each_patch_once(tmp_path, monkeypatch):
    """run reads every patch once (in the preflight), then trains on that dataset."""
    config = write_project(tmp_path)
    reads, trained = [], []
    sample_patches = soilsource.data.dataset.sample_patches

    def counted(raster, points, size, **kwargs):
        reads.append(len(points))
        return sample_patches(raster, points, size, **kwargs)

    def evaluate(dataset, *args, **kwargs):
        trained.append(dataset)
        raise KeyboardInterrupt  # stop before training

    monkeypatch.setattr(soilsource.data.dataset, "sample_patches", counted)
    monkeypatch.setattr(soilsource.pipeline.runner, "evaluate", evaluate)
    with pytest.raises(KeyboardInterrupt):
        soilsource.pipeline.run(config, tmp_path / "out")
    assert sum(reads) == 20 and len(trained) == 1
    assert sum(len(r) for r in trained[0]) == 20
    assert not (tmp_path / "out" / LOCK_FILE).exists()  # the lock goes with the run


def test_free_disk_knob(tmp_path, monkeypatch):
    config = write_project(tmp_path)
    need = plan(config, tmp_path / "out").output_bytes
    monkeypatch.setenv(FREE_DISK_ENV, str(need - 1))
    with pytest.raises(InputError, match=r"the run writes about .* only .* is free there"):
        plan(config, tmp_path / "out")
    monkeypatch.setenv(FREE_DISK_ENV, str(need))
    plan(config, tmp_path / "out")


def one_epoch(config) -> None:
    edit_config(config, lambda c: c.update(
        model={"baselines": ["random_forest"]}, compute={"device": "cpu"},
        train={"folds": 2, "max_epochs": 1, "patience": 1, "min_steps": 0},
    ))  # fmt: skip


@pytest.mark.slow
def test_tiny_run_with_unicode_paths_and_one_band(tmp_path):
    """A whole (one-epoch) run on single-band imagery under a Unicode path with spaces."""
    config = unicode_project(tmp_path)
    root = config.parent
    data = np.random.default_rng(1).integers(100, 4000, size=(1, SIZE, SIZE), dtype=np.uint16)
    write_raster(root / "imagery.tif", data, nodata=0, descriptions=("nir",))
    one_epoch(config)
    result = soilsource.pipeline.run(config, root / "run out")
    assert set(result.metrics["regions"]) == {"Nord Süd", "东莞 北"}
    assert (root / "run out" / "report.html").is_file()
    assert not (root / "run out" / LOCK_FILE).exists()
    with rasterio.open(next((root / "run out" / "probability").glob("*.tif"))) as src:
        assert src.count == 1


@pytest.mark.slow
def test_tiny_run_on_scenes_in_two_crss(tmp_path):
    config = two_crs_project(tmp_path)
    one_epoch(config)
    result = soilsource.pipeline.run(config, tmp_path / "run")
    assert set(result.metrics["regions"]) == {"r1", "r2"}
    assert len(list((tmp_path / "run" / "probability").glob("*.tif"))) == 4  # 2 per region


def test_one_class_everywhere_passes_with_a_warning_per_region(tmp_path):
    """Every sample below the limit: no AUC anywhere, but the models still learn (a metal
    below its limit in a several-metal run is reported, not dropped), so it is warned."""
    config = write_project(tmp_path, label={"rule": "threshold", "threshold": 5.0})
    found = plan(config)
    assert sum(r.n_pos for r in found.regions) == 0
    assert [w for w in found.warnings if "AUC cannot be computed" in w] == [
        f"region '{name}': all 10 usable samples are negative under the rule; "
        "its AUC cannot be computed"
        for name in ("r1", "r2")
    ]


def test_a_landuse_code_missing_from_the_table_is_found_before_any_patch(tmp_path, monkeypatch):
    """The issue's case: run trained every model, then failed on the class table. Now the
    preflight finds it before it reads a single patch."""
    config = write_project(tmp_path)
    (tmp_path / "classes.csv").write_text("code,name\n1,industrial\n2,paddy\n")
    reads = []
    monkeypatch.setattr(soilsource.data.dataset, "sample_patches", lambda *a, **k: reads.append(a))
    with pytest.raises(InputError, match=r"code 3: not in the class table classes\.csv"):
        plan(config, tmp_path / "out")
    assert not reads and not (tmp_path / "out").exists()
