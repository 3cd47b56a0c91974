"""The synthetic city: files, metadata, truth consistency, determinism, difficulty, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from pyproj import Transformer
from shapely.geometry import box
from sklearn.metrics import roc_auc_score

from soilsource.cli import main
from soilsource.config import load_config
from soilsource.data.labels import exceeds, gb15618_screening_value
from soilsource.errors import InputError
from soilsource.synth import REGIONS, LandUse, build_region, write_city
from soilsource.synth.cadmium import (
    AUC_BAND,
    DETECTION_LIMIT,
    LAB_CV,
    build_cadmium,
    calibrate_scale,
    contribution_pathways,
    expected_emissions,
    measure,
    plume_kernel,
)
from soilsource.synth.fields import distance_m, smooth_noise
from soilsource.synth.landscape import build_landscape, subdivide
from soilsource.synth.metals import COLUMNS, DETECTION_LIMIT_MGKG, METALS, SOURCES
from soilsource.synth.recipes import BANDS, SOIL_CLASSES

NAMES = [r.name for r in REGIONS]
SOIL_NAMES = {c.label for c in SOIL_CLASSES}
TO_UTM = Transformer.from_crs("EPSG:4326", "EPSG:32649", always_xy=True)


def _summary(city: Path) -> dict:
    return json.loads((city / "truth" / "summary.json").read_text())


# --------------------------------------------------------------------------- files


def test_every_file_of_the_city_is_written(small_city):
    for name in NAMES:
        for folder in ("imagery", "landuse", "truth/contribution", "truth/background"):
            assert (small_city / folder / f"{name}.tif").is_file(), (folder, name)
    for path in (
        "samples.csv",
        "config.yaml",
        "landuse/classes.csv",
        "truth/sources.gpkg",
        "truth/summary.json",
        "truth/samples.csv",
    ):
        assert (small_city / path).is_file(), path
    assert not [p for p in small_city.parent.iterdir() if p.name.startswith(".")]  # no temp dirs


def test_imagery_metadata(small_city):
    for name in NAMES:
        with rasterio.open(small_city / "imagery" / f"{name}.tif") as src:
            assert src.crs.to_epsg() == 32649
            assert src.res == (10.0, 10.0)
            assert (src.count, src.width, src.height) == (6, 128, 128)
            assert src.dtypes == ("uint16",) * 6
            assert src.descriptions == BANDS
            assert src.nodata == 0
            assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
            assert src.compression.name.lower() == "deflate"
            assert src.scales == (1e-4,) * 6 and src.offsets == (0.0,) * 6
            assert src.tags(1)["SENTINEL2_BAND"] == "B2"
            data = src.read()
        assert data.min() >= 1  # 0 is nodata and never a valid reflectance
        assert np.percentile(data, 99) < 6000  # surface reflectance, not radiance


def test_imagery_shows_land_use_but_not_trivially(small_city):
    """Vegetation is red-edge bright, water dark in NIR, roofs bright in the visible, and
    industrial and residential pixels overlap in spectrum (as real roofs do)."""
    spectra = {c: [] for c in LandUse}
    for name in NAMES:
        with rasterio.open(small_city / "imagery" / f"{name}.tif") as src:
            img = src.read().astype(float) / 10000
        with rasterio.open(small_city / "landuse" / f"{name}.tif") as src:
            lu = src.read(1)
        for c in LandUse:
            spectra[c].append(img[:, lu == c].T)
    px = {c: np.concatenate(v) for c, v in spectra.items()}
    mean = {c: v.mean(axis=0) for c, v in px.items()}
    red, nir = BANDS.index("red"), BANDS.index("nir")
    assert mean[LandUse.FOREST][nir] > 5 * mean[LandUse.FOREST][red]
    assert mean[LandUse.WATER][nir] < 0.1
    for built in (LandUse.INDUSTRIAL, LandUse.RESIDENTIAL):
        assert mean[built][red] > 2 * mean[LandUse.FOREST][red]
    # Nearest class mean of industrial vs residential: far from perfect.
    ind, res = px[LandUse.INDUSTRIAL], px[LandUse.RESIDENTIAL]
    both = np.concatenate([ind, res])
    truth = np.r_[np.ones(len(ind), bool), np.zeros(len(res), bool)]
    d_ind = np.linalg.norm(both - mean[LandUse.INDUSTRIAL], axis=1)
    d_res = np.linalg.norm(both - mean[LandUse.RESIDENTIAL], axis=1)
    accuracy = np.mean((d_ind < d_res) == truth)
    assert 0.5 < accuracy < 0.85


def test_landuse_rasters_and_classes(small_city):
    classes = pd.read_csv(small_city / "landuse" / "classes.csv")
    assert list(classes.columns) == ["code", "name"]
    assert 0 not in classes["code"].tolist()
    names = set(classes["name"])
    for needed in ("industrial", "residential", "paddy", "forest", "water", "road"):
        assert needed in names
    assert any("farmland" in n or "orchard" in n for n in names)
    for name in NAMES:
        with rasterio.open(small_city / "landuse" / f"{name}.tif") as src:
            assert src.crs.to_epsg() == 32649 and src.res == (10.0, 10.0)
            assert src.dtypes == ("uint8",) and src.nodata == 0
            lu = src.read(1)
        # Every class in every region, even at 1.28 km.
        assert set(np.unique(lu)) == set(classes["code"]), name


def test_samples_table(small_city):
    samples = pd.read_csv(small_city / "samples.csv")
    assert list(samples.columns) == [
        "sample_id",
        "region",
        "lon",
        "lat",
        "cd_mgkg",
        "pb_mgkg",
        "zn_mgkg",
        "cu_mgkg",
        "ni_mgkg",
        "cr_mgkg",
        "as_mgkg",
        "hg_mgkg",
        "ph",
        "is_paddy",
        "landuse",
    ]
    assert samples["sample_id"].is_unique
    assert samples["lon"].between(113.0, 115.0).all()
    assert samples["lat"].between(22.0, 24.0).all()
    assert samples["is_paddy"].dtype == bool
    assert (samples["is_paddy"] == (samples["landuse"] == "paddy")).all()
    assert (samples["cd_mgkg"] >= DETECTION_LIMIT / 2).all()
    assert samples["ph"].between(3.5, 9.0).all()
    assert set(samples["landuse"]) <= SOIL_NAMES
    assert set(samples["region"]) == set(NAMES)
    summary = _summary(small_city)
    for name, group in samples.groupby("region"):
        assert len(group) >= 40
        assert summary["regions"][name]["n"] == len(group)


def test_samples_lie_on_soil_in_the_rasters(small_city):
    """Never on water, roads or roofs: the land-use raster at each point is a soil class."""
    samples = pd.read_csv(small_city / "samples.csv")
    soil_codes = {int(c) for c in SOIL_CLASSES}
    for name, group in samples.groupby("region"):
        x, y = TO_UTM.transform(group["lon"].to_numpy(), group["lat"].to_numpy())
        with rasterio.open(small_city / "landuse" / f"{name}.tif") as src:
            codes = np.array([v[0] for v in src.sample(zip(x, y, strict=True))])
        assert set(codes.tolist()) <= soil_codes, name
        assert [LandUse(int(c)).label for c in codes] == group["landuse"].tolist()


def test_labels_are_gb15618_and_match_the_summary(small_city):
    samples = pd.read_csv(small_city / "samples.csv")
    truth = pd.read_csv(small_city / "truth" / "samples.csv")
    limit = gb15618_screening_value("Cd", samples["ph"].to_numpy(), samples["is_paddy"].to_numpy())
    label = exceeds(samples["cd_mgkg"].to_numpy(), limit)
    np.testing.assert_array_equal(label, truth["label"].to_numpy())
    summary = _summary(small_city)
    assert summary["rule"]["name"] == "gb15618"
    for name, region in summary["regions"].items():
        mine = label[samples["region"].to_numpy() == name]
        assert region["n_pos"] == int(mine.sum())
        assert 0 < region["n_pos"] < region["n"]  # both classes


def test_truth_agrees_with_samples_and_rasters(small_city):
    """Reported Cd = (background + contribution) x lab error, within the stated noise."""
    samples = pd.read_csv(small_city / "samples.csv")
    truth = pd.read_csv(small_city / "truth" / "samples.csv")
    assert (truth["sample_id"] == samples["sample_id"]).all()
    np.testing.assert_allclose(
        truth["true_cd"], truth["background"] + truth["contribution"], atol=2e-4
    )
    pathways = truth[["site", "atmospheric", "traffic", "irrigation"]].sum(axis=1)
    np.testing.assert_allclose(pathways, truth["contribution"], atol=5e-4)
    above = samples["cd_mgkg"] >= DETECTION_LIMIT
    log_ratio = np.log(samples["cd_mgkg"][above] / truth["true_cd"][above])
    assert abs(log_ratio.mean()) < 0.03
    assert 0.6 * LAB_CV < log_ratio.std() < 1.4 * LAB_CV
    assert np.abs(log_ratio).max() < 5 * LAB_CV
    # The truth table holds the raster values at the sample points.
    for name, group in truth.groupby("region"):
        xy = list(zip(group["x"], group["y"], strict=True))
        for folder, column in (("contribution", "contribution"), ("background", "background")):
            with rasterio.open(small_city / "truth" / folder / f"{name}.tif") as src:
                assert src.dtypes == ("float32",) and src.crs.to_epsg() == 32649
                values = np.array([v[0] for v in src.sample(xy)])
            np.testing.assert_allclose(values, group[column], atol=1e-4)


# Seed 0 at 128 px as main wrote it before the other metals existed (commit 1e0f8c5): the
# sha256 of samples.csv and truth/samples.csv restricted to their columns of then.
OLD_SAMPLES_SHA256 = "fdadd89f445f10a2b6cf0e7837595ae8256885f9a2cd8a7a9b1d1793972dc8bd"
OLD_TRUTH_SHA256 = "661af734510e9917e553067363e7aafca41299cdce0b1c97ca70b3c99393e17e"
OLD_TRUTH_COLUMNS = [
    "sample_id",
    "region",
    "x",
    "y",
    "landuse",
    "background",
    "contribution",
    "site",
    "atmospheric",
    "traffic",
    "irrigation",
    "true_cd",
    "cd_mgkg",
    "screening_value",
    "label",
]


def _sha256(table: pd.DataFrame) -> str:
    return hashlib.sha256(table.to_csv(index=False, lineterminator="\n").encode()).hexdigest()


def test_cd_is_unchanged_by_the_other_metals(small_city):
    """The other metals come from a generator of their own: Cd, the samples and their
    truth are byte for byte what they were before."""
    samples = pd.read_csv(small_city / "samples.csv")
    old = [c for c in samples.columns if c not in {COLUMNS[m] for m in METALS[1:]}]
    assert _sha256(samples[old]) == OLD_SAMPLES_SHA256
    truth = pd.read_csv(small_city / "truth" / "samples.csv")
    assert _sha256(truth[OLD_TRUTH_COLUMNS]) == OLD_TRUTH_SHA256


def test_other_metals_are_measured_like_cd(small_city):
    samples = pd.read_csv(small_city / "samples.csv")
    truth = pd.read_csv(small_city / "truth" / "samples.csv")
    for metal in METALS[1:]:
        reported = samples[COLUMNS[metal]]
        limit = DETECTION_LIMIT_MGKG[metal]
        assert ((reported >= limit) | (reported == limit / 2)).all(), metal
        true = truth[f"true_{metal.lower()}"]
        above = reported >= limit
        log_ratio = np.log(reported[above] / true[above])
        assert abs(log_ratio.mean()) < 0.05, metal
        assert log_ratio.std() < 0.3, metal
    # Metals follow their sources: Ni and Cr (geogenic only, nearly) track background Cd.
    assert np.corrcoef(truth["true_ni"], truth["background"])[0, 1] > 0.99
    assert np.corrcoef(samples["ni_mgkg"], samples["cd_mgkg"])[0, 1] < 0.9


def test_source_truth_reproduces_the_noise_free_concentrations(small_city):
    truth = pd.read_csv(small_city / "truth" / "samples.csv")
    profiles = pd.read_csv(small_city / "truth" / "source_profiles.csv")
    contributions = pd.read_csv(small_city / "truth" / "source_contributions.csv")
    assert list(profiles.columns) == ["source", "metal", "mg_kg_per_unit", "share"]
    assert list(contributions.columns) == ["sample_id", "region", "source", "contribution"]
    assert set(profiles["source"]) == set(SOURCES) and set(profiles["metal"]) == set(METALS)
    np.testing.assert_allclose(profiles.groupby("metal")["share"].sum(), 1.0, atol=1e-5)
    g = contributions.pivot(index="sample_id", columns="source", values="contribution")
    g = g.loc[truth["sample_id"], list(SOURCES)]
    np.testing.assert_allclose(g.mean(), 1.0, atol=1e-5)  # as PMF scales its factors
    f = profiles.pivot(index="source", columns="metal", values="mg_kg_per_unit")
    modelled = g.to_numpy() @ f.loc[list(SOURCES), list(METALS)].to_numpy()
    for j, metal in enumerate(METALS):
        np.testing.assert_allclose(
            modelled[:, j], truth[f"true_{metal.lower()}"], rtol=1e-4, atol=2e-4, err_msg=metal
        )
    # The share is each source's part of the metal's total over the samples.
    total = modelled.sum(axis=0)
    geogenic_cd = (g["geogenic"] * f.loc["geogenic", "Cd"]).sum() / total[METALS.index("Cd")]
    share = profiles.set_index(["source", "metal"])["share"]
    assert share["geogenic", "Cd"] == pytest.approx(geogenic_cd, abs=1e-5)
    # Where a source is absent its contribution is zero: fertiliser off farmland.
    off_farm = ~truth["landuse"].isin(["paddy", "dry_farmland_orchard"]).to_numpy()
    assert off_farm.any() and (g["fertiliser"].to_numpy()[off_farm] == 0).all()


def test_summary_content(small_city):
    summary = _summary(small_city)
    assert summary["seed"] == 0 and summary["size_px"] == 128 and summary["crs"] == "EPSG:32649"
    assert list(summary["regions"]) == NAMES
    truth = pd.read_csv(small_city / "truth" / "samples.csv")
    labels = {c.label for c in LandUse}
    for name, region in summary["regions"].items():
        mine = truth[truth["region"] == name]
        auc = roc_auc_score(mine["label"], mine["contribution"])
        assert region["oracle_auc"] == pytest.approx(auc, abs=2e-3)
        ranking = region["landuse_ranking"]
        assert set(ranking) == labels
        means = [region["landuse_mean_contribution"][k] for k in ranking]
        assert means == sorted(means, reverse=True)
        assert "industrial" in ranking[:3]  # emitting sites sit on industrial land
        assert region["strength_scale"] > 0


def test_visible_oracle_auc_in_the_summary(small_city):
    summary = _summary(small_city)
    differs = 0
    for name, region in summary["regions"].items():
        for key in ("visible_oracle_auc", "oracle_own_limit_auc"):
            assert 0.0 <= region[key] <= 1.0, (name, key)
        differs += region["visible_oracle_auc"] != region["oracle_auc"]
    assert differs >= 4  # not the truth under another name


@pytest.mark.parametrize("index", [0, 2, 5])
def test_visible_oracle_auc_is_that_of_the_expected_contribution(small_city, index):
    """Recomputed from the rasters: the pathways of the expected emissions, x the region's
    strength factor, plus the visible background median, against each sample's limit."""
    recipe = REGIONS[index]
    region = build_region(recipe, index, seed=0, size_px=128)
    cad, land, samples = region.cadmium, region.land, region.samples
    pathways = contribution_pathways(land, recipe, expected_emissions(land, recipe))
    expected = region.strength_scale * sum(pathways.values())
    np.testing.assert_allclose(cad.expected_contribution, expected, rtol=1e-5, atol=1e-7)
    assert not np.allclose(cad.expected_contribution, cad.contribution)
    # The visible background median is the background's median: half the pixels above.
    above = np.mean(cad.background > cad.background_median)
    assert 0.4 < above < 0.6
    rows, cols = samples["row"].to_numpy(), samples["col"].to_numpy()
    cd = cad.background_median[rows, cols] + cad.expected_contribution[rows, cols]
    score = np.log(cd) - np.log(samples["screening_value"].to_numpy())
    truth = _summary(small_city)["regions"][recipe.name]
    auc = roc_auc_score(samples["label"], score)
    assert truth["visible_oracle_auc"] == pytest.approx(auc, abs=1e-4)
    true_cd = cad.background_median[rows, cols] + cad.contribution[rows, cols]
    own_limit = roc_auc_score(
        samples["label"], np.log(true_cd) - np.log(samples["screening_value"])
    )
    assert truth["oracle_own_limit_auc"] == pytest.approx(own_limit, abs=1e-4)


@pytest.mark.parametrize("index", [0, 2])
def test_expected_emissions_are_the_mean_of_the_draws(index):
    """Atmospheric and irrigation Cd are linear in the emissions: their expected rasters
    are the mean over draws of which parcels emit, how much, with stacks and effluents."""
    recipe = REGIONS[index]
    land = build_landscape(recipe, 96, np.random.default_rng(5))
    expected = contribution_pathways(land, recipe, expected_emissions(land, recipe))
    draws = [build_cadmium(land, recipe, np.random.default_rng(k)).pathways for k in range(40)]
    for name in ("atmospheric", "irrigation"):
        means = np.array([d[name].mean() for d in draws])
        error = abs(means.mean() - expected[name].mean())
        assert error < 4 * means.std() / np.sqrt(means.size) + 1e-6, name


def test_sources_geopackage(small_city):
    sources = gpd.read_file(small_city / "truth" / "sources.gpkg", layer="sources")
    assert sources.crs.to_epsg() == 32649
    assert {"region", "type", "strength", "unit", "geometry"} <= set(sources.columns)
    assert set(sources["region"]) == set(NAMES)
    assert set(sources["type"]) <= {
        "industrial_site",
        "stack",
        "effluent",
        "upstream_inflow",
        "traffic",
    }
    assert (sources["strength"] > 0).all()
    sites = sources[sources["type"] == "industrial_site"]
    assert (sites.geometry.geom_type == "Polygon").all()
    assert (sources[sources["type"] == "stack"].geometry.geom_type == "Point").all()
    for name, group in sources.groupby("region"):
        assert {"industrial_site", "stack", "traffic"} <= set(group["type"]), name
    # Emitters' strengths are lognormal, spread over orders of magnitude.
    log_strength = np.log(sites["strength"])
    spread = log_strength - log_strength.groupby(sites["region"]).transform("mean")
    assert len(spread) >= 30
    assert 0.7 < spread.std() < 1.5
    assert np.exp(spread.max() - spread.min()) > 30


def test_config_is_ready_for_soilsource_run(small_city):
    config = load_config(small_city / "config.yaml")
    assert config.metal == "Cd"
    assert config.label.rule == "gb15618"
    assert config.samples.path == (small_city / "samples.csv").resolve()
    assert config.samples.crs == "EPSG:4326"
    assert (config.samples.x, config.samples.y, config.samples.value) == ("lon", "lat", "cd_mgkg")
    assert (config.samples.ph, config.samples.paddy) == ("ph", "is_paddy")
    assert config.imagery.is_template and config.landuse.is_template
    assert config.patch.size_m == 1280 and config.explain.window_m == 160
    assert config.train.scope == "region" and config.train.cv == "knndm"
    assert (small_city / "config.yaml").read_text().startswith("#")


# --------------------------------------------------------------------------- determinism


def _bytes(city: Path) -> dict[str, bytes]:
    files = sorted(city.glob("**/*.tif")) + sorted(city.glob("**/*.csv"))
    return {str(p.relative_to(city)): p.read_bytes() for p in files}


def test_same_seed_same_bytes_other_seed_different(small_city, tmp_path):
    write_city(tmp_path / "again", seed=0, size_px=128)
    assert _bytes(tmp_path / "again") == _bytes(small_city)
    assert json.loads((tmp_path / "again/truth/summary.json").read_text()) == _summary(small_city)
    write_city(tmp_path / "other", seed=1, size_px=128)
    other = _bytes(tmp_path / "other")
    mine = _bytes(small_city)
    assert other.keys() == mine.keys()
    for key in mine:
        if key != "landuse/classes.csv":
            assert other[key] != mine[key], key


# --------------------------------------------------------------------------- difficulty


def test_oracle_auc_in_range_at_a_moderate_size(tmp_path):
    """Every region: not easy, not hopeless (the docs give the default-size numbers)."""
    summary = write_city(tmp_path / "city", seed=0, size_px=320)
    for name, region in summary["regions"].items():
        assert 0.75 <= region["oracle_auc"] <= 0.95, (name, region["oracle_auc"])
        assert 0.1 <= region["n_pos"] / region["n"] <= 0.9, name


def _fake_samples(rng: np.random.Generator, n: int, strength: float) -> pd.DataFrame:
    contribution = strength * rng.lognormal(-2.5, 1.2, n)
    return pd.DataFrame(
        {
            "background": rng.lognormal(np.log(0.16), 0.35, n),
            "contribution": contribution,
            "ph": rng.uniform(4.5, 7.5, n).round(2),
            "is_paddy": rng.random(n) < 0.4,
            "lab_factor": rng.lognormal(0, LAB_CV, n),
        }
    )


@pytest.mark.parametrize("strength", [0.05, 1.0, 30.0])
def test_calibration_moves_the_oracle_auc_into_the_band(strength):
    samples = _fake_samples(np.random.default_rng(3), 300, strength)
    scale = calibrate_scale(samples)
    measured = measure(samples, scale)
    auc = roc_auc_score(measured["label"], measured["contribution"])
    assert AUC_BAND[0] - 0.005 <= auc <= AUC_BAND[1] + 0.005
    if strength == 30.0:
        assert scale < 1.0  # too easy: sources weakened
    if strength == 0.05:
        assert scale > 1.0  # too hard: sources strengthened


def test_calibration_keeps_a_region_already_in_the_band():
    rng = np.random.default_rng(0)
    for _ in range(20):
        samples = _fake_samples(rng, 300, rng.uniform(0.5, 3))
        measured = measure(samples, 1.0)
        auc = roc_auc_score(measured["label"], measured["contribution"])
        n_pos = measured["label"].sum()
        if AUC_BAND[0] <= auc <= AUC_BAND[1] and 30 <= n_pos <= 270:
            assert calibrate_scale(samples) == 1.0
            return
    pytest.fail("no in-band draw to test with")


# --------------------------------------------------------------------------- generators


def test_only_some_industrial_parcels_emit_and_plumes_follow_the_wind():
    recipe = REGIONS[0]
    rng = np.random.default_rng(7)
    land = build_landscape(recipe, 300, rng)
    cad = build_cadmium(land, recipe, rng)
    n_industrial = int((land.parcels["kind"] == "industrial").sum())
    n_sites = int((cad.sources["type"] == "industrial_site").sum())
    assert 0.2 <= n_sites / n_industrial <= 0.4
    assert cad.contribution.dtype == np.float32 and (cad.contribution >= 0).all()
    assert 0.03 < float(np.median(cad.background)) < 0.4
    assert cad.ph.min() >= 3.9 and cad.ph.max() <= 8.4
    # Traffic: road pixels carry more traffic Cd than pixels 200 m away from any road.
    far = distance_m(land.road_class > 0, 10.0) > 200
    traffic = cad.pathways["traffic"]
    assert traffic[land.road_class > 0].mean() > 5 * traffic[far].mean()


def test_plume_kernel_is_anisotropic():
    kernel = plume_kernel((45.0, 45.0), 1.0, pixel_m=50.0)  # wind from the north-east
    c = kernel.shape[0] // 2
    downwind = kernel[c + 20, c - 20]  # 1.4 km to the south-west
    upwind = kernel[c - 20, c + 20]  # 1.4 km to the north-east
    assert downwind > 20 * upwind
    assert kernel.max() == pytest.approx(1.0)


def test_smooth_noise_is_standardised_and_correlated():
    field = smooth_noise(np.random.default_rng(0), (200, 300), 10.0)
    assert field.shape == (200, 300)
    assert abs(field.mean()) < 1e-5 and field.std() == pytest.approx(1.0, abs=1e-4)
    lag1 = np.corrcoef(field[:, :-1].ravel(), field[:, 1:].ravel())[0, 1]
    assert lag1 > 0.9


def test_subdivide_tiles_the_polygon_into_pieces_near_the_target():
    block = box(0, 0, 400, 200)
    pieces, src = subdivide(np.array([block]), np.array([2000.0]), np.random.default_rng(1))
    assert (src == 0).all()
    assert shapely.area(pieces).sum() == pytest.approx(block.area)
    assert shapely.area(pieces).max() <= 4000.0  # split while above 1-2 x the target
    assert shapely.union_all(pieces).symmetric_difference(block).area < 1e-6
    assert shapely.area(shapely.intersection_all(pieces[:2])) < 1e-6  # no overlaps


# --------------------------------------------------------------------------- bad input


def test_write_city_refuses_a_non_empty_directory(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(InputError, match="exists and is not empty"):
        write_city(out, size_px=64)
    assert (out / "keep.txt").read_text() == "user data"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"seed": -1}, "--seed"), ({"size_px": 10_000}, "--size-px"), ({"size_px": 8}, "--size-px")],
)
def test_write_city_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        write_city(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--seed", "-3"], "--seed: must be 0 or more"),
        (["--size-px", "32"], "Invalid value for '--size-px'"),
        (["--size-px", "100000"], "--size-px: must be between"),
        (["--size-px", "ten"], "Invalid value for '--size-px'"),
    ],
)
def test_cli_bad_arguments_exit_2_one_line(tmp_path, capsys, argv, expected):
    assert main(["synth", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert expected in err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_non_empty_out(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("")
    assert main(["synth", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(tmp_path) in err and "exists and is not empty" in err


def test_cli_writes_a_city(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "c"), "--seed", "2", "--size-px", "64"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    assert _summary(tmp_path / "c")["seed"] == 2
