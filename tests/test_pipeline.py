"""End to end: ``soilsource run`` on a small synthetic city writes every output of SPEC.md."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch

from soilsource.cli import main
from soilsource.config import load_config
from soilsource.data.dataset import load_dataset
from soilsource.data.patches import extract_patches, patch_size_px
from soilsource.inputs import describe_raster
from soilsource.learn.training import TrainSettings
from soilsource.mapping.probability import probability_map
from soilsource.models import SILICNet
from soilsource.models.modelio import load_model
from soilsource.models.pretrain import PretrainSettings
from soilsource.pipeline.runner import (
    MODEL,
    evaluate,
    model_factory,
    occlusion_background,
    oof,
    pretrained_trunks,
    run,
    train_settings,
)
from soilsource.rundir import is_complete

FAST = TrainSettings(max_epochs=2, batch_size=16, patience=1)


def _small_config(city: Path, tmp_path: Path) -> Path:
    """The city's own config.yaml with small patches and 3 folds, so a run takes seconds."""
    text = (city / "config.yaml").read_text()
    config = load_config(city / "config.yaml")
    raw = config.model_dump(mode="json")
    raw["patch"]["size_m"] = 320.0
    raw["model"]["pretrain_steps"] = 10  # the pretraining runs, briefly
    raw["explain"].update(window_m=80.0, stride_m=40.0, max_samples=50)  # a subset is explained
    raw["train"]["folds"] = 3
    path = tmp_path / "config.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    assert "samples" in text
    return path


@pytest.fixture(scope="module")
def city_run(small_city, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    config = _small_config(small_city, tmp)
    result = run(config, tmp / "out", settings=FAST, device="cpu")
    return config, result


@pytest.mark.slow
def test_run_writes_every_output(city_run):
    _, result = city_run
    out = result.out
    assert is_complete(out)
    for name in ("config.yaml", "metrics.json", "predictions.csv", "landuse_sensitivity.csv",
                 "hotspots.gpkg", "geodetector.csv"):  # fmt: skip
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metal"] == "Cd"
    regions = metrics["regions"]
    assert len(regions) == 6
    for name, entry in regions.items():
        assert {"n", "n_pos", "auc", "auc_ci95", "baselines"} <= set(entry)
        assert entry["auc"] is None or 0.0 <= entry["auc"] <= 1.0
        if entry["auc"] is not None:
            lo, hi = entry["auc_ci95"]
            assert lo <= entry["auc"] <= hi
        assert "random_forest" in entry["baselines"]
        # the second round's contract: the fold design, paired differences, skill, Brier
        assert entry["cv"]["design"] == "knndm" and entry["cv"]["method"] in ("knndm", "random")
        assert set(entry["cv"]["prediction_to_sample_m"]) == {"q5", "q25", "q50", "q75", "q95"}
        if entry["auc"] is not None:
            diff, lo, hi = entry["auc_diff"]["random_forest"]
            assert lo <= diff <= hi
            assert entry["skill"] == (entry["auc_ci95"][0] > 0.5)
        assert 0.0 <= entry["brier"] <= 1.0
        assert -1.0 <= entry["spearman_value"] <= 1.0
        assert entry["explained_samples"] == min(entry["n"], 50)  # explain.max_samples
        assert (out / "figures" / f"roc_{name}.png").stat().st_size > 1000
        for kind in ("sensitivity", "probability", "concentration"):
            with rasterio.open(out / kind / f"{name}.tif") as src:
                assert src.dtypes[0] == "float32"
                assert src.crs.to_epsg() == 32649
                data = src.read(1)
                assert np.isfinite(data).any()
        assert (out / "models" / name / "silicnet.pt").is_file()
        assert (out / "models" / name / "random_forest.npz").is_file()
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "explained on a random subset stratified by label" in report
    assert f"{name}: 50 of {regions[name]['n']:,} samples" in report


@pytest.mark.slow
def test_predictions_are_out_of_fold_and_match_metrics(city_run):
    _, result = city_run
    table = pd.read_csv(result.out / "predictions.csv", dtype={"sample_id": str})
    assert list(table.columns[:8]) == [
        "sample_id", "region", "x", "y", "value", "label", "prob", "fold",
    ]  # fmt: skip
    assert table["prob"].between(0, 1).all()
    assert set(table["fold"]) <= {0, 1, 2}
    assert {"pred_value", "limit", "prob_random_forest", "pred_value_random_forest"} <= set(
        table.columns
    )
    assert (table["pred_value"] > 0).all() and (table["limit"] > 0).all()
    assert table["label"].equals((table["value"] > table["limit"]).astype(int))
    metrics = json.loads((result.out / "metrics.json").read_text())
    for name, group in table.groupby("region"):
        assert len(group) == metrics["regions"][name]["n"]
        assert group["label"].sum() == metrics["regions"][name]["n_pos"]


@pytest.mark.slow
def test_landuse_table_and_hotspots_are_consistent(city_run):
    _, result = city_run
    table = pd.read_csv(result.out / "landuse_sensitivity.csv")
    assert list(table.columns) == [
        "region", "class", "mean_sensitivity", "area_share", "hotspot_share",
        "enrichment", "p_value", "evidence_z", "rank", "driver",
    ]  # fmt: skip
    assert (table["evidence_z"].notna() == table["mean_sensitivity"].notna()).all()
    for _, group in table.groupby("region"):
        assert group["area_share"].sum() == pytest.approx(1.0, abs=1e-6)
    hotspots = gpd.read_file(result.out / "hotspots.gpkg", layer="hotspots")
    assert {"region", "area_m2", "mean_sensitivity", "landuse"} <= set(hotspots.columns)
    assert hotspots.crs.to_epsg() == 32649
    candidates = gpd.read_file(result.out / "candidates.gpkg", layer="candidates")
    assert list(candidates.columns[:10]) == [
        "region", "rank", "class", "area_m2", "x", "y", "effect", "effect_lo", "effect_hi",
        "n_samples",
    ]  # fmt: skip
    assert candidates.crs.to_epsg() == 32649
    assert (candidates["effect"] > 0).all()
    # Skill gates the answers: no hotspots, candidates or drivers without it.
    metrics = json.loads((result.out / "metrics.json").read_text())
    for region, entry in metrics["regions"].items():
        if entry["skill"]:
            continue
        assert entry["skill_reason"]
        assert not (hotspots["region"] == region).any()
        assert not (candidates["region"] == region).any()
        assert not table.loc[table["region"] == region, "driver"].any()
    for path in (result.out / "probability").glob("*.tif"):
        with rasterio.open(result.out / "applicability" / path.name) as src:
            assert float(src.tags()["AOA_THRESHOLD"]) > 0
            assert src.dtypes[0] == "float32" and src.shape == rasterio.open(path).shape
    drivers = table[table["driver"]]
    assert (drivers["mean_sensitivity"] > 0).all() and (drivers["p_value"] < 0.05).all()


@pytest.mark.slow
def test_saved_model_reproduces_the_probability_map(city_run, small_city):
    """The model file, loaded without pickle, gives the map's value at a sample's pixel."""
    _, result = city_run
    region = "industrial_town"
    saved = load_model(result.out / "models" / region / "silicnet.pt")
    model = saved.model
    assert isinstance(model, SILICNet)
    stats = saved.metadata["band_stats"]
    mean = np.asarray(stats["mean"], np.float32)[:, None, None]
    std = np.asarray(stats["std"], np.float32)[:, None, None]
    raster = describe_raster(small_city / "imagery" / f"{region}.tif")
    size = patch_size_px(320.0, raster)
    scale = np.asarray(raster.scales, np.float32)[:, None, None]
    offset = np.asarray(raster.offsets, np.float32)[:, None, None]
    with rasterio.open(raster.path) as src:  # physical units, as the patches are
        image = (src.read().astype(np.float32) * scale + offset - mean) / std
    dense = probability_map(model, image, raw=True)
    i, j = 64, 70  # a pixel whose patch lies inside the image
    x, y = raster.transform @ (j + 0.5, i + 0.5)
    patch = extract_patches(raster, np.array([[x, y]]), size)
    z = model(torch.from_numpy((patch.data - mean) / std)).item()
    assert dense[i, j] == pytest.approx(z, abs=1e-4)
    # the default target is the concentration: the link saved with the model makes the maps
    link = saved.link
    assert link is not None
    with rasterio.open(result.out / "probability" / f"{region}.tif") as src:
        written, tags = src.read(1), src.tags()
    limits = [float(v) for v in tags["LIMITS_MG_KG"].split(",")]
    weights = [float(v) for v in tags["LIMIT_WEIGHTS"].split(",")]
    prob = sum(
        w * link.exceedance(np.array([z]), lim)[0] for lim, w in zip(limits, weights, strict=True)
    )
    assert written[i, j] == pytest.approx(prob, abs=1e-4)
    with rasterio.open(result.out / "concentration" / f"{region}.tif") as src:
        assert src.read(1)[i, j] == pytest.approx(link.median(np.array([z]))[0], rel=1e-4)


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(city_run, tmp_path):
    config, result = city_run
    again = run(config, tmp_path / "again", settings=FAST, device="cpu")
    assert (again.out / "metrics.json").read_bytes() == (result.out / "metrics.json").read_bytes()
    assert (again.out / "predictions.csv").read_bytes() == (
        result.out / "predictions.csv"
    ).read_bytes()


@pytest.mark.slow
def test_run_refuses_to_overwrite_a_complete_run(city_run, capsys):
    config, result = city_run
    assert main(["run", str(config), "--out", str(result.out)]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("holds a complete run; use --force to replace it")
    assert is_complete(result.out)


@pytest.mark.slow
def test_run_refuses_a_directory_of_the_users(city_run, tmp_path, capsys):
    config, _ = city_run
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["run", str(config), "--out", str(mine)]) == 2
    assert "is not a soilsource run" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep"


def test_run_bad_config_is_one_line_and_writes_nothing(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("samples: {path: nowhere.csv, value: cd}\nimagery: {path: x.tif}\n")
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{config}: key 'samples.crs'" in err
    assert not out.exists()  # the configuration is checked before anything is written


def test_pooled_scope_cross_validates_all_regions_on_knndm_folds(small_city, tmp_path):
    # train.scope pooled with the default kNNDM CV: one model on every region's samples, whose
    # folds are matched to all regions' prediction areas together (this crashed on
    # comparing the areas' arrays with None)
    config = load_config(_small_config(small_city, tmp_path))
    config.train.scope, config.model.baselines = "pooled", []
    assert config.train.cv == "knndm"
    dataset = load_dataset(config)
    cv = evaluate(dataset, config, models=["random_forest"], final=False, n_boot=10)
    pooled = cv["random_forest"]
    assert list(pooled) == ["pooled"]
    assert pooled["pooled"].design["method"] in ("knndm", "random")
    assert set(pooled["pooled"].regions) == {r.name for r in dataset}
    for region in dataset:
        proba, fold = oof(pooled, region, dataset)
        assert len(proba) == len(region) and np.isfinite(proba).all() and (fold >= 0).all()


def test_occlusion_background_follows_explain_occlude_with(small_city, tmp_path):
    from soilsource.data.patches import BandStats

    config = load_config(_small_config(small_city, tmp_path))
    region = next(iter(load_dataset(config)))
    stats = BandStats.fit(region.patches.read())
    assert config.explain.occlude_with == "clean"  # the default
    config.explain.occlude_with = "mean"  # one occlusion, with the band means
    assert occlusion_background(region.patches, stats, config) == ()
    config.explain.occlude_with, config.explain.typical_k = "typical", 4
    background = occlusion_background(region.patches, stats, config)
    assert len(background) == 4
    assert abs(sum(w for w, _ in background) - 1.0) < 1e-9
    assert all(len(pixel) == len(region.patches.band_names) for _, pixel in background)
    assert occlusion_background(region.patches, stats, config) == background  # seeded
    # 'clean': the typical pixels of the clean samples' patches (below their own limit)
    clean = np.arange(len(region)) % 3 == 0  # which samples are clean is the caller's
    assert 10 <= clean.sum() <= 256
    config.explain.occlude_with = "clean"
    from_clean = occlusion_background(region.patches, stats, config, clean)
    config.explain.occlude_with = "typical"
    rows = np.flatnonzero(clean)
    assert from_clean == occlusion_background(region.patches.subset(rows), stats, config)
    assert from_clean != background
    config.explain.occlude_with = "clean"  # too few clean samples: all of them
    few = np.zeros(len(clean), bool)
    few[:3] = True
    assert occlusion_background(region.patches, stats, config, few) == background


def test_a_pretrained_trunk_starts_every_network_of_its_region(small_city, tmp_path):
    config = load_config(_small_config(small_city, tmp_path))
    config.model.members, config.model.sectors = 2, 4
    dataset = load_dataset(config)
    assert config.model.pretrain  # on by default
    config.model.pretrain = False
    assert pretrained_trunks(dataset, config, "cpu") == {}
    config.model.pretrain = True
    tiny = PretrainSettings(steps=2, batch=4, anchors=8)
    trunks = pretrained_trunks(dataset, config, "cpu", settings=tiny)
    assert set(trunks) == {r.name for r in dataset}
    first, second = (trunks[r.name] for r in list(dataset)[:2])
    assert not torch.equal(first["stem.0.weight"], second["stem.0.weight"])  # own imagery
    region = next(iter(dataset))
    trunk = trunks[region.name]
    for _ in range(2):  # every fold's network, not only the first
        net = model_factory(MODEL, dataset, config, FAST, trunk)().inner.module
        assert net.n_sectors == 4 and net.members == 2
        for key, value in trunk.items():
            assert torch.equal(net.state_dict()[key], value)
    config.train.scope = "pooled"
    assert set(pretrained_trunks(dataset, config, "cpu", settings=tiny)) == {"pooled"}


def test_model_factory_without_settings_trains_as_the_configuration_says(small_city, tmp_path):
    config = load_config(_small_config(small_city, tmp_path))
    config.model.pretrain = False
    config.train.min_steps, config.train.max_epochs, config.train.augment = 123, 7, "none"
    dataset = load_dataset(config)
    net = model_factory(MODEL, dataset, config, None)().inner
    assert net.settings == train_settings(config)  # what soilsource run trains with
    assert (net.settings.min_steps, net.settings.max_epochs) == (123, 7)
    assert net.settings.augment is False
    assert model_factory(MODEL, dataset, config, FAST)().inner.settings == FAST  # given wins
