"""Scoring explanations against known truth: AUC of source pixels, ranking agreement."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
from rasterio.transform import from_origin
from scipy import ndimage

import tinyinputs
from soilsource.analysis.zones import landuse_statistics, write_landuse_sensitivity
from soilsource.explain.scoring import (
    SCORE_COLUMNS,
    ranking_spearman,
    score_region,
    score_run,
    source_auc,
    source_pixels,
)

ORIGIN_XY = (500_000.0, 2_560_000.0)
TRANSFORM = from_origin(*ORIGIN_XY, 10.0, 10.0)
write_raster = partial(tinyinputs.write_raster, origin=ORIGIN_XY)
CLASSES = {1: "industrial", 2: "residential", 3: "paddy", 4: "forest"}


def truth_region(seed=0, size=80):
    """Land use in four bands of rows; contribution highest on industrial, zero on forest."""
    rng = np.random.default_rng(seed)
    landuse = np.repeat(np.array([1, 2, 3, 4]), size // 4)[:, None].repeat(size, axis=1)
    level = {1: 3.0, 2: 2.0, 3: 1.0, 4: 0.0}
    contribution = np.vectorize(level.get)(landuse) * rng.uniform(0.5, 1.5, landuse.shape)
    return landuse.astype(np.uint8), contribution.astype(np.float32)


def test_source_auc_is_one_for_the_truth_and_zero_for_its_opposite():
    _, c = truth_region()
    assert source_auc(c, c) == 1.0
    assert source_auc(-c, c) == 0.0
    noise = np.random.default_rng(1).normal(size=c.shape)
    assert source_auc(noise, c) == pytest.approx(0.5, abs=0.05)


def test_source_pixels_are_the_top_share_of_positive_contribution():
    c = np.array([0.0] * 8 + [1.0, 2.0])
    assert source_pixels(c, 0.8).tolist() == [False] * 8 + [True, True]
    assert not source_pixels(np.zeros(10), 0.5).any()  # no contribution: no sources
    assert np.isnan(source_auc(np.arange(10.0), np.zeros(10)))
    with pytest.raises(ValueError, match="source_quantile"):
        source_pixels(c, 1.0)


def test_uncovered_pixels_are_left_out():
    s = np.array([np.nan, np.nan, 0.1, 0.9])
    c = np.array([9.0, 9.0, 0.0, 1.0])  # the big values are not covered
    assert source_auc(s, c, source_quantile=0.5) == 1.0


def test_ranking_spearman():
    truth = ["industrial", "residential", "paddy", "forest"]
    assert ranking_spearman(truth, truth) == 1.0
    assert ranking_spearman(truth[::-1], truth) == -1.0
    assert ranking_spearman(["industrial", "water", "paddy", "residential"], truth) == 0.5
    assert np.isnan(ranking_spearman(["industrial", "paddy"], truth))


def test_score_region_from_files_with_subsampling(tmp_path):
    landuse, c = truth_region()
    rng = np.random.default_rng(2)
    s = ndimage.gaussian_filter(c, 2) + rng.normal(0, 0.3, c.shape).astype(np.float32)
    s[:, :10] = np.nan
    paths = {
        "s": write_raster(tmp_path / "s.tif", s.astype(np.float32), nodata=np.nan),
        "c": write_raster(tmp_path / "c.tif", c, nodata=None),
        "lu": write_raster(tmp_path / "lu.tif", landuse, nodata=0),
    }
    ranking = ["industrial", "residential", "paddy", "forest"]
    kwargs = {"estimated_ranking": ranking[::-1], "true_ranking": ranking}
    full = score_region(paths["s"], paths["c"], landuse_path=paths["lu"], classes=CLASSES, **kwargs)
    assert full["n_pixels"] == np.isfinite(s).sum()
    assert full["source_auc"] == pytest.approx(source_auc(s, c))
    assert full["source_auc"] > 0.8
    assert full["spearman_landuse"] == -1.0 and full["spearman_landuse_covered"] == -1.0
    assert full["n_classes_compared"] == 4
    sampled = score_region(paths["s"], paths["c"], max_pixels=1000, **kwargs)
    assert 500 < sampled["n_pixels"] <= 1000  # every 6th of 5600 covered pixels
    assert sampled["source_auc"] == pytest.approx(full["source_auc"], abs=0.05)
    assert np.isnan(sampled["spearman_landuse_covered"])  # no land use given


def test_truth_off_the_sensitivity_grid_is_refused(tmp_path):
    _, c = truth_region()
    s_path = write_raster(tmp_path / "s.tif", c, nodata=np.nan)
    c_path = write_raster(tmp_path / "c.tif", c[:40], nodata=None)
    with pytest.raises(ValueError, match="not on the grid"):
        score_region(s_path, c_path, estimated_ranking=[], true_ranking=[])


def test_score_run_reads_a_run_and_a_city(tmp_path):
    city, run = tmp_path / "city", tmp_path / "run"
    results = []
    summary = {"regions": {}}
    for k, region in enumerate(["north", "south"]):
        landuse, c = truth_region(seed=k)
        write_raster(city / "truth" / "contribution" / f"{region}.tif", c, nodata=None)
        write_raster(city / "landuse" / f"{region}.tif", landuse, nodata=0)
        s = (c if region == "north" else -c).astype(np.float32)
        write_raster(run / "sensitivity" / f"{region}.tif", s, nodata=np.nan)
        results.append(landuse_statistics(s, landuse, CLASSES, region=region))
        ranking = ["industrial", "residential", "paddy", "forest"]
        summary["regions"][region] = {"landuse_ranking": ranking}
    summary["regions"]["west"] = {"landuse_ranking": []}  # no map in the run: left out
    (city / "truth" / "summary.json").write_text(json.dumps(summary))
    (city / "landuse" / "classes.csv").write_text(
        "code,name\n" + "".join(f"{c},{n}\n" for c, n in CLASSES.items())
    )
    write_landuse_sensitivity(run / "landuse_sensitivity.csv", results)
    scores = score_run(run, city)
    assert list(scores.columns) == SCORE_COLUMNS
    assert scores.region.tolist() == ["north", "south"]
    north, south = scores.iloc[0], scores.iloc[1]
    assert north.source_auc == 1.0 and north.spearman_landuse == 1.0
    assert south.source_auc == 0.0 and south.spearman_landuse == -1.0
    assert south.spearman_landuse_covered == -1.0


def test_candidate_scores_against_chance_and_the_informed_inspector(tmp_path):
    """Four factories in a row; the first and third emit. Samples sit beside each; the
    enriched ones beside the emitters. Candidates naming factories 1 and 2 score 0.5; the
    informed inspector, led by the enriched samples, names both emitters (1.0); the share
    is 2 of 4."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    from soilsource.explain.scoring import CANDIDATE_COLUMNS, candidate_scores

    city = tmp_path / "city"
    landuse = np.full((40, 80), 3, np.uint8)  # paddy
    boxes = [(5, 15, 5 + 20 * k, 15 + 20 * k) for k in range(4)]  # rows, cols
    for r0, r1, c0, c1 in boxes:
        landuse[r0:r1, c0:c1] = 1  # industrial
    write_raster(city / "landuse" / "north.tif", landuse, nodata=0)
    (city / "landuse" / "classes.csv").write_text(
        "code,name\n" + "".join(f"{c},{n}\n" for c, n in CLASSES.items())
    )
    x0, y0 = ORIGIN_XY

    def box(r0, r1, c0, c1):
        return shapely.box(x0 + 10 * c0, y0 - 10 * r1, x0 + 10 * c1, y0 - 10 * r0)

    emitters = [box(*boxes[0]), box(*boxes[2])]
    (city / "truth").mkdir()
    gpd.GeoDataFrame(
        {"region": ["north"] * 2, "type": "industrial_site"}, geometry=emitters, crs="EPSG:32649"
    ).to_file(city / "truth" / "sources.gpkg", layer="sources")
    # one sample 5 px below each factory; site Cd only beside the emitters
    xs = [x0 + 10 * (10 + 20 * k) for k in range(4)]
    samples = pd.DataFrame(
        {"region": "north", "x": xs, "y": y0 - 10 * 20, "site": [0.4, 0.0, 0.9, 0.0]}
    )
    samples.to_csv(city / "truth" / "samples.csv", index=False)
    (city / "truth" / "summary.json").write_text(json.dumps({"regions": {"north": {}}}))
    candidates = gpd.GeoDataFrame(
        {"region": "north", "rank": [1, 2]},
        geometry=[box(*boxes[0]), box(*boxes[1])],
        crs="EPSG:32649",
    )
    scores = candidate_scores(candidates, city, cell_px=32, k=10)
    assert list(scores.columns) == CANDIDATE_COLUMNS
    row = scores.iloc[0]
    assert row.precision_at_k == 0.5 and row.n_candidates == 2
    assert row.emitting_share == 0.5
    assert row.informed_precision_at_k == 1.0
