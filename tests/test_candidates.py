"""Candidate sources: objects, their effects on samples, ranking, the GeoPackage."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from scipy import sparse

from soilsource.explain.candidates import (
    CELL_CLASS,
    COLUMNS,
    exceedance_weights,
    object_effects,
    object_labels,
    region_candidates,
    sample_effects,
    write_candidates,
)

CLASSES = {1: "industrial", 2: "paddy"}


def test_objects_are_patches_of_one_class_and_large_ones_are_cut():
    codes = np.full((12, 12), 2)
    codes[1:3, 1:3] = 1  # a small factory
    codes[8:10, 8:10] = 1  # another, apart
    labels, names = object_labels(codes, CLASSES, cell_px=4)
    assert labels[1, 1] != labels[8, 8]
    assert names[labels[1, 1]] == names[labels[8, 8]] == "industrial"
    assert len(np.unique(labels[1:3, 1:3])) == 1
    paddy = np.unique(labels[codes == 2])
    assert len(paddy) > 1  # the 136-px paddy tract is more than 2 cells of 16 px: cut
    assert all(names[k] == "paddy" for k in paddy)
    assert (labels > 0).all()


def test_codes_outside_the_table_belong_to_no_object():
    codes = np.array([[1, 9], [2, 0]])
    labels, _ = object_labels(codes, CLASSES, cell_px=8)
    assert labels[0, 1] == 0 and labels[1, 1] == 0


def test_without_land_use_the_grid_cells_are_objects():
    valid = np.ones((6, 6), bool)
    valid[0, 0] = False
    labels, names = object_labels(None, None, cell_px=3, valid=valid)
    assert len(np.unique(labels[valid])) == 4
    assert labels[0, 0] == 0
    assert set(names[1:]) == {CELL_CLASS}


def test_sample_effects_sum_each_objects_share_of_the_map():
    labels = np.zeros((6, 6), np.int32)
    labels[0:2, 0:2] = 1
    labels[4:6, 4:6] = 2
    maps = np.zeros((2, 4, 4))
    maps[0, :2, :2] = 0.5  # sample 0's patch at (0, 0) sees object 1
    maps[1, 2:, 2:] = -0.25  # sample 1's patch at (2, 2) sees object 2, negatively
    effects = sample_effects(maps, np.array([0, 2]), np.array([0, 2]), labels, window_px=2)
    dense = effects.toarray()
    assert dense.shape == (2, 3)
    assert dense[0, 1] == pytest.approx(4 * 0.5 / 4)
    assert dense[1, 2] == pytest.approx(4 * -0.25 / 4)
    assert dense[0, 2] == 0 and dense[1, 1] == 0


def test_the_object_around_contaminated_samples_ranks_first():
    # Object 1 raises the prediction of the contaminated samples, object 2 of clean ones.
    rng = np.random.default_rng(0)
    n = 40
    contaminated = np.arange(n) < 20
    e = np.zeros((n, 3))
    e[contaminated, 1] = rng.uniform(0.5, 1.0, 20)
    e[~contaminated, 2] = rng.uniform(0.5, 1.0, 20)
    values = np.where(contaminated, 0.9, 0.1)
    weights = exceedance_weights(values, np.full(n, 0.3))
    table = object_effects(sparse.csr_matrix(e), weights, n_boot=200)
    assert table.loc[1, "effect"] > 0 and table.loc[2, "effect"] == 0
    assert table.loc[1, "effect_lo"] <= table.loc[1, "effect"] <= table.loc[1, "effect_hi"]
    assert table.loc[1, "effect_lo"] > 0
    assert table.loc[1, "n_samples"] == 20


def test_candidates_table_and_geopackage(tmp_path):
    labels = np.zeros((10, 10), np.int32)
    labels[0:2, 0:3] = 1
    labels[6:9, 6:9] = 2
    names = ["", "industrial", "residential"]
    affected = sparse.csr_matrix(np.array([[0.0, 0.4, 0.1], [0.0, 0.2, 0.0]]))
    effects = object_effects(affected, np.array([1.0, 1.0]), n_boot=50)

    def candidates(**kwargs):
        return region_candidates(
            effects,
            labels,
            names,
            transform=Affine(10.0, 0, 1000.0, 0, -10.0, 2000.0),
            crs="EPSG:32649",
            region="r",
            sample_xy=np.array([[1010.0, 1990.0], [1090.0, 1910.0]]),
            sample_values=np.array([0.8, 0.2]),
            affected=affected,
            **kwargs,
        )

    frame = candidates(top=5)
    assert list(frame.columns[: len(COLUMNS)]) == COLUMNS
    assert frame["rank"].tolist() == [1, 2]
    assert frame["class"].tolist() == ["industrial", "residential"]
    assert frame["area_m2"].tolist() == [600.0, 900.0]
    assert frame.loc[0, "x"] == pytest.approx(1015.0) and frame.loc[0, "y"] == pytest.approx(1990.0)
    assert frame.loc[0, "n_samples"] == 2 and frame.loc[0, "value_max"] == 0.8
    path = write_candidates(tmp_path / "candidates.gpkg", [frame], crs="EPSG:32649")
    back = gpd.read_file(path, layer="candidates")
    assert back.crs.to_epsg() == 32649 and len(back) == 2
    with closing(sqlite3.connect(path)) as db:  # QGIS's default style, as for hotspots
        styles = db.execute(
            "SELECT f_table_name, useAsDefault, styleQML FROM layer_styles"
        ).fetchall()
    assert [(t, d) for t, d, _ in styles] == [("candidates", 1)] and "0,229,255" in styles[0][2]
    only = candidates(classes=["residential"])  # the region's drivers
    assert only["class"].tolist() == ["residential"] and only["rank"].tolist() == [1]
    empty = gpd.read_file(
        write_candidates(tmp_path / "none.gpkg", [], crs="EPSG:32649"), layer="candidates"
    )
    assert len(empty) == 0 and set(COLUMNS) <= set(empty.columns)
