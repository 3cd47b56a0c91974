"""Land-use statistics: known answers, the q-statistic, and the calibration of the test."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest
from rasterio.transform import from_origin
from scipy import ndimage

import tinyinputs
from soilsource.analysis.zones import (
    GEODETECTOR_COLUMNS,
    TABLE_COLUMNS,
    ZoneResult,
    landuse_statistics,
    mark_drivers,
    region_landuse_statistics,
    write_geodetector,
    write_landuse_sensitivity,
)
from soilsource.errors import InputError

ORIGIN_XY = (500_000.0, 2_560_000.0)
TRANSFORM = from_origin(*ORIGIN_XY, 10.0, 10.0)
write_raster = partial(tinyinputs.write_raster, origin=ORIGIN_XY)
CLASSES = {1: "industrial", 2: "residential", 3: "paddy", 4: "forest"}


def smooth_field(rng, shape, sigma):
    z = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (z - z.mean()) / z.std()


def patchy_coverage(rng, shape, n=25, half=10):
    """Covered area as the union of square patches around random samples."""
    covered = np.zeros(shape, bool)
    for r, c in rng.integers(0, shape[0], (n, 2)):
        covered[max(0, r - half) : r + half, max(0, c - half) : c + half] = True
    return covered


def null_map(seed, size=96, sigma=5.0):
    """Sensitivity and land use that are independent, each spatially autocorrelated."""
    rng = np.random.default_rng(seed)
    s = smooth_field(rng, (size, size), sigma)
    z = smooth_field(rng, (size, size), sigma + 1)
    landuse = np.digitize(z, np.quantile(z, [0.25, 0.5, 0.75])) + 1
    s[~patchy_coverage(rng, (size, size))] = np.nan
    return s.astype(np.float32), landuse


def direct_q(s, landuse):
    """q from its definition: 1 - sum_h N_h var_h / (N var)."""
    ok = np.isfinite(s)
    y, h = s[ok].astype(float), landuse[ok]
    within = sum((h == c).sum() * y[h == c].var() for c in np.unique(h))
    return 1 - within / (y.size * y.var())


def test_known_answer_shares_enrichment_and_rank():
    s = np.full((10, 10), 0.1, np.float32)
    landuse = np.ones((10, 10), int)  # 60 % industrial, 40 % paddy
    landuse[6:] = 3
    s[6:] = 0.5
    s[8:, :5] = 0.9  # the top 10 % is all paddy
    s[0, 0] = np.nan  # not covered: 99 covered pixels
    result = landuse_statistics(s, landuse, CLASSES, region="east", top_share=0.1)
    table = result.table.set_index("class")
    assert list(result.table.columns) == TABLE_COLUMNS
    assert result.table["class"].tolist()[:2] == ["paddy", "industrial"]
    assert table.loc["paddy", "rank"] == 1 and table.loc["industrial", "rank"] == 2
    assert table.loc["industrial", "area_share"] == pytest.approx(59 / 99)
    assert table.loc["paddy", "area_share"] == pytest.approx(40 / 99)
    assert table.loc["paddy", "mean_sensitivity"] == pytest.approx((10 * 0.9 + 30 * 0.5) / 40)
    assert table.loc["paddy", "hotspot_share"] == 1.0
    assert table.loc["paddy", "enrichment"] == pytest.approx(99 / 40)
    assert table.loc["industrial", "enrichment"] == 0.0
    # Classes of the table that are absent: a row, share 0, no rank.
    assert table.loc["forest", "area_share"] == 0.0
    assert pd.isna(table.loc["forest", "rank"]) and np.isnan(table.loc["forest", "p_value"])
    assert set(result.table.region) == {"east"}


def test_q_is_one_for_constant_classes_and_zero_for_equal_class_means():
    landuse = np.repeat([[1, 2, 3, 4]], 8, axis=0).repeat(5, axis=1)
    constant_within = landuse * 0.25
    assert landuse_statistics(constant_within, landuse, CLASSES).geodetector["q"] == 1.0
    equal_means = np.tile([[0.0, 1.0], [1.0, 0.0]], (4, 10))  # every class: half 0, half 1
    result = landuse_statistics(equal_means, landuse, CLASSES)
    assert result.geodetector["q"] == pytest.approx(0.0, abs=1e-12)
    assert result.geodetector["p_value_ftest"] == pytest.approx(1.0)
    assert result.geodetector["p_value"] == 1.0  # every offset is at least as extreme


def test_q_matches_its_definition_on_a_random_map():
    s, landuse = null_map(3)
    result = landuse_statistics(s, landuse, CLASSES, region="r", tile_px=32)
    geo = result.geodetector
    assert list(geo) == GEODETECTOR_COLUMNS
    assert geo["q"] == pytest.approx(direct_q(s, landuse), rel=1e-9)
    assert geo["n_pixels"] == np.isfinite(s).sum() and geo["n_classes"] == 4
    assert geo["cell_px"] == 1
    means = pd.Series(s[np.isfinite(s)]).groupby(landuse[np.isfinite(s)]).mean()
    table = result.table.set_index("class")
    for code, name in CLASSES.items():
        assert table.loc[name, "mean_sensitivity"] == pytest.approx(means[code], rel=1e-6)


def test_a_sensitive_class_is_ranked_first_with_a_small_p_value():
    s, landuse = null_map(11)
    s = s + 1.5 * (landuse == 2)  # residential made sensitive
    result = landuse_statistics(s, landuse, CLASSES)
    table = result.table.set_index("class")
    assert result.table["class"].iloc[0] == "residential"
    assert table.loc["residential", "p_value"] < 0.01
    assert table.drop("residential").p_value.min() > 0.05
    assert result.geodetector["p_value"] < 0.01 and result.geodetector["q"] > 0.15
    # The hotspots fall on residential land.
    assert table.loc["residential", "enrichment"] > 2


def test_drivers_rank_before_classes_with_a_higher_but_insignificant_mean():
    table = pd.DataFrame(
        {
            "class": ["water", "sparse", "dense", "bright", "absent"],
            "mean_sensitivity": [0.09, 0.05, 0.05, 0.03, np.nan],
            "p_value": [0.40, 0.01, 0.02, 0.30, np.nan],
        }
    )
    ranked = mark_drivers(ZoneResult(table, {})).table
    assert ranked["class"].tolist() == ["dense", "sparse", "water", "bright", "absent"]
    assert ranked["rank"].tolist()[:4] == [1, 1, 3, 4]  # tied drivers share the best rank
    assert ranked["driver"].tolist() == [True, True, False, False, False]
    assert pd.isna(ranked["rank"].iloc[4])  # not in the covered area: no rank
    without_skill = mark_drivers(ZoneResult(table, {}), skill=False).table
    assert without_skill["class"].tolist()[:4] == ["water", "dense", "sparse", "bright"]
    assert not without_skill["driver"].any()
    assert without_skill["rank"].tolist()[:4] == [1, 2, 2, 4]


def test_evidence_z_is_the_class_mean_against_its_torus_null():
    s, landuse = null_map(11)
    small = np.zeros_like(landuse, bool)
    small[40:46, 40:46] = True  # a small class: its mean varies a lot between offsets
    landuse = np.where(small, 5, landuse)
    classes = CLASSES | {5: "quarry"}
    s = s + 1.5 * (landuse == 2)  # residential made sensitive over a quarter of the map
    s[small] += 2.0  # the quarry's mean is higher, on 36 pixels
    table = landuse_statistics(s, landuse, classes).table.set_index("class")
    assert table.loc["quarry", "mean_sensitivity"] > table.loc["residential", "mean_sensitivity"]
    # The evidence, in standard deviations of the class mean over the offsets, is stronger
    # for the large class: a high mean on a few pixels is what chance alignments give too.
    assert table.loc["residential", "evidence_z"] > table.loc["quarry", "evidence_z"] > 0
    assert table.drop(["residential", "quarry"]).evidence_z.max() < 2
    nulls = [landuse_statistics(*null_map(200 + k), CLASSES).table.evidence_z for k in range(10)]
    z = pd.concat(nulls).to_numpy()
    assert np.isfinite(z).all() and abs(z.mean()) < 0.5 and 0.5 < z.std() < 1.6


def test_the_test_is_not_anti_conservative_on_autocorrelated_null_maps():
    p_torus, p_q, p_pixel = [], [], []
    rng = np.random.default_rng(0)
    for seed in range(40):
        s, landuse = null_map(100 + seed)
        result = landuse_statistics(s, landuse, CLASSES)
        p_torus += result.table.p_value.tolist()
        p_q.append(result.geodetector["p_value"])
        # The naive test, for contrast: permute the land use of covered pixels.
        ok = np.isfinite(s)
        y, h = s[ok], landuse[ok]
        observed = y[h == 1].mean()
        null = [y[rng.permutation(h) == 1].mean() for _ in range(199)]
        p_pixel.append((1 + np.sum(np.array(null) >= observed)) / 200)
    p_torus, p_q, p_pixel = map(np.array, (p_torus, p_q, p_pixel))
    assert p_torus.size == 160 and np.isfinite(p_torus).all()
    assert np.mean(p_torus <= 0.05) <= 0.10  # nominal 5 %; 10 % is 2.9 binomial SEs away
    assert np.mean(p_torus <= 0.20) <= 0.30
    assert 0.4 < p_torus.mean() < 0.6  # uniform-ish: mean 0.5
    assert np.mean(p_q <= 0.05) <= 0.15
    # Pixel permutation on the same maps is far too optimistic: the check can fail.
    assert np.mean(p_pixel <= 0.05) > 0.2


def test_unknown_codes_and_nodata_are_left_out_of_the_shares():
    s = np.ones((4, 5), np.float32)
    landuse = np.array([[1, 1, 2, 2, 0]] * 4)  # 0 is not in the table
    result = landuse_statistics(s, landuse, {1: "a", 2: "b"})
    assert result.table.area_share.tolist() == [0.5, 0.5]
    assert result.geodetector["n_pixels"] == 16


def test_large_grids_use_cells_and_keep_exact_statistics():
    s, landuse = null_map(11, size=120)
    s = s + 1.5 * (landuse == 2)
    exact = landuse_statistics(s, landuse, CLASSES)
    coarse = landuse_statistics(s, landuse, CLASSES, max_cells=30 * 30)
    assert coarse.geodetector["cell_px"] == 4 and exact.geodetector["cell_px"] == 1
    columns = ["class", "mean_sensitivity", "area_share", "hotspot_share", "enrichment", "rank"]
    pd.testing.assert_frame_equal(exact.table[columns], coarse.table[columns])
    assert coarse.geodetector["q"] == exact.geodetector["q"]
    assert coarse.table.set_index("class").loc["residential", "p_value"] < 0.01


def test_results_are_deterministic():
    s, landuse = null_map(5)
    a, b = landuse_statistics(s, landuse, CLASSES), landuse_statistics(s, landuse, CLASSES)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.geodetector == b.geodetector


def test_files_read_window_by_window_give_the_same_answer(tmp_path):
    s, landuse = null_map(7)
    landuse = landuse.astype(np.uint8)
    landuse[:3] = 255  # nodata: unknown
    s_path = write_raster(tmp_path / "s.tif", s, nodata=np.nan)
    lu_path = write_raster(tmp_path / "lu.tif", landuse, nodata=255)
    from_files = region_landuse_statistics(s_path, lu_path, CLASSES, region="r", tile_px=16)
    in_memory = landuse_statistics(s, landuse, CLASSES, region="r")
    pd.testing.assert_frame_equal(from_files.table, in_memory.table, rtol=1e-9)
    assert from_files.geodetector["q"] == pytest.approx(in_memory.geodetector["q"], rel=1e-9)
    assert from_files.geodetector["n_pixels"] == np.isfinite(s[3:]).sum()


def test_land_use_off_the_grid_and_bad_arguments(tmp_path):
    s, landuse = null_map(7)
    s_path = write_raster(tmp_path / "s.tif", s, nodata=np.nan)
    off = (400_000.0, 2_560_000.0)
    lu_path = write_raster(tmp_path / "lu.tif", landuse.astype(np.uint8), nodata=0, origin=off)
    with pytest.raises(InputError, match="not the imagery grid"):
        region_landuse_statistics(s_path, lu_path, CLASSES)
    with pytest.raises(ValueError, match="differ"):
        landuse_statistics(s, landuse[:10], CLASSES)
    with pytest.raises(ValueError, match="empty"):
        landuse_statistics(s, landuse, {})


def test_a_region_without_covered_land_use_gives_empty_statistics(capsys):
    s = np.full((8, 8), np.nan, np.float32)
    result = landuse_statistics(s, np.ones((8, 8), int), CLASSES, region="void")
    assert result.table.mean_sensitivity.isna().all() and result.table["rank"].isna().all()
    assert np.isnan(result.geodetector["q"]) and result.geodetector["n_pixels"] == 0
    assert "void" in capsys.readouterr().err


def test_csv_files_have_the_exact_columns(tmp_path):
    a = landuse_statistics(*null_map(1), CLASSES, region="north")
    b = landuse_statistics(*null_map(2), CLASSES, region="south")
    path = write_landuse_sensitivity(tmp_path / "landuse_sensitivity.csv", [a, b])
    back = pd.read_csv(path)
    assert list(back.columns) == TABLE_COLUMNS
    assert back.region.tolist() == ["north"] * 4 + ["south"] * 4
    assert back.groupby("region").area_share.sum().round(12).tolist() == [1.0, 1.0]
    geo = pd.read_csv(write_geodetector(tmp_path / "landuse_geodetector.csv", [a, b]))
    assert list(geo.columns) == GEODETECTOR_COLUMNS and geo.region.tolist() == ["north", "south"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "landuse_geodetector.csv",
        "landuse_sensitivity.csv",
    ]
