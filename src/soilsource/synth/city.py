"""Write the synthetic six-region city: imagery, land use, samples, truth and config.yaml.

One region at a time: its random streams come from ``(seed, region index)``, so
a region does not change when another one does, and the same seed gives the
same bytes. Everything is written into a temporary directory that becomes
``out`` only when the whole city is complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from pyproj import Transformer

from soilsource.atomic import atomic_directory
from soilsource.errors import InputError
from soilsource.progress import track
from soilsource.synth.cadmium import (
    DETECTION_LIMIT,
    LAB_CV,
    PATHWAYS,
    Cadmium,
    build_cadmium,
    calibrate_scale,
    draw_samples,
    measure,
    n_samples,
    oracle_auc,
    own_limit_score,
)
from soilsource.synth.landscape import Landscape, build_landscape
from soilsource.synth.metals import (
    COLUMNS,
    DETECTION_LIMIT_MGKG,
    METALS,
    SOURCES,
    add_metals,
    truth_tables,
)
from soilsource.synth.metals import LAB_CV as METAL_LAB_CV
from soilsource.synth.recipes import (
    BANDS,
    CRS,
    DEFAULT_SIZE_PX,
    IMAGERY_NODATA,
    LANDUSE_NODATA,
    MAX_SIZE_PX,
    MIN_SIZE_PX,
    PIXEL_M,
    REFLECTANCE_SCALE,
    REGIONS,
    LandUse,
    RegionRecipe,
)
from soilsource.synth.spectra import render_imagery

SENTINEL2 = {  # band: (Sentinel-2 band, centre wavelength nm)
    "blue": ("B2", 490),
    "green": ("B3", 560),
    "red": ("B4", 665),
    "nir": ("B8", 842),
    "swir1": ("B11", 1610),
    "swir2": ("B12", 2190),
}

LANDUSE_COLOURS = {
    LandUse.INDUSTRIAL: (150, 60, 200),
    LandUse.RESIDENTIAL: (230, 80, 60),
    LandUse.PADDY: (170, 220, 100),
    LandUse.DRY_FARMLAND_ORCHARD: (250, 180, 90),
    LandUse.FOREST: (30, 130, 60),
    LandUse.WATER: (40, 120, 190),
    LandUse.ROAD: (90, 90, 90),
    LandUse.GREEN_SPACE: (120, 230, 200),
}

CONFIG_YAML = """\
# soilsource configuration of the synthetic city written by `soilsource synth`.
# Run it with: soilsource run config.yaml --out RUN. The truth (sources,
# contribution rasters, summary.json) is in truth/; soilsource run never reads it.
metal: Cd
samples: {path: samples.csv, x: lon, y: lat, crs: "EPSG:4326", value: cd_mgkg,
          region: region, id: sample_id, ph: ph, paddy: is_paddy}
imagery: {path: "imagery/{region}.tif"}
landuse: {path: "landuse/{region}.tif", classes: landuse/classes.csv}
label: {rule: gb15618}
patch: {size_m: 1280}
explain: {window_m: 160, stride_m: 40}
model: {baselines: [random_forest], target: value}
train: {scope: region, folds: 5, cv: knndm, seed: 0}
compute: {device: auto, scheduler: null}
"""

GTIFF = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256}


@dataclass
class Region:
    """One generated region: landscape, image, Cd truth and measured samples."""

    recipe: RegionRecipe
    land: Landscape
    imagery: np.ndarray
    cadmium: Cadmium
    # measured, with truth columns: contribution, its pathways, expected_contribution and
    # background_median (what is expected from what is visible, see cadmium.own_limit_score);
    # the other metals (see synth.metals): src_SOURCE fields, true_xx and xx_mgkg
    samples: pd.DataFrame
    strength_scale: float


def build_region(recipe: RegionRecipe, index: int, seed: int, size_px: int) -> Region:
    """Generate one region from ``(seed, index)`` (no files written)."""
    # Independent streams per stage: a change to the imagery leaves Cd and samples alone,
    # and the other metals (the fifth stream, added later) leave the first four as they were.
    streams = np.random.SeedSequence([seed, index]).spawn(5)
    rng_land, rng_cd, rng_samples, rng_image, rng_metals = (
        np.random.default_rng(s) for s in streams
    )
    land = build_landscape(recipe, size_px, rng_land)
    cadmium = build_cadmium(land, recipe, rng_cd)
    drawn = draw_samples(land, cadmium, n_samples(recipe, size_px, DEFAULT_SIZE_PX), rng_samples)
    scale = calibrate_scale(drawn)
    cadmium = cadmium.scaled(scale)
    samples = measure(drawn, scale)
    for name, raster in cadmium.pathways.items():
        samples[name] = raster[samples["row"], samples["col"]].astype(float)
    for name in ("expected_contribution", "background_median"):
        samples[name] = getattr(cadmium, name)[samples["row"], samples["col"]].astype(float)
    samples = add_metals(samples, land, rng_metals)
    imagery = render_imagery(land, recipe, rng_image)
    return Region(recipe, land, imagery, cadmium, samples, scale)


def write_city(out: str | os.PathLike[str], seed: int = 0, size_px: int | None = None) -> dict:
    """Write the synthetic six-region city into ``out`` and return its truth summary.

    Parameters
    ----------
    out:
        Directory to create. It must not exist or be empty; it appears only once
        complete.
    seed:
        Non-negative random seed; the same seed gives byte-identical rasters and CSVs.
    size_px:
        Side of each region in 10 m pixels (default 1000, i.e. 10 km).

    Returns
    -------
    dict
        The content of ``truth/summary.json``: ``seed``, ``rule`` and, per region,
        ``n``, ``n_pos``, ``oracle_auc`` and ``landuse_ranking`` among others.
    """
    seed = _check_seed(seed)
    size_px = _check_size(size_px)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "", "exists and is not empty; give a new directory or remove it")
    summary: dict = {
        "seed": seed,
        "size_px": size_px,
        "pixel_m": PIXEL_M,
        "crs": CRS,
        "rule": {
            "name": "gb15618",
            "metal": "Cd",
            "standard": "GB 15618-2018 Table 1 risk screening value, by pH and paddy",
            "positive": "cd_mgkg strictly greater than the screening value",
        },
        "measurement": {
            "lab_cv": LAB_CV,
            "detection_limit_mgkg": DETECTION_LIMIT,
            "below_detection_limit": "reported as half the detection limit",
            "rounding_mgkg": 0.001,
        },
        "metals": {
            "columns": COLUMNS,
            "sources": list(SOURCES),
            "lab_cv": METAL_LAB_CV,
            "detection_limit_mgkg": DETECTION_LIMIT_MGKG,
            "below_detection_limit": "reported as half the detection limit",
            "truth": "truth/source_profiles.csv, truth/source_contributions.csv",
        },
        "regions": {},
    }
    samples, truth, sources = [], [], []
    with atomic_directory(out) as tmp:
        for index, recipe in track(list(enumerate(REGIONS)), "synthetic city"):
            region = build_region(recipe, index, seed, size_px)
            _write_region(tmp, region)
            table, truth_table = _sample_tables(region)
            samples.append(table)
            truth.append(truth_table)
            sources.append(region.cadmium.sources)
            summary["regions"][recipe.name] = _region_summary(region)
        _write_csv(tmp / "samples.csv", pd.concat(samples, ignore_index=True))
        truth_all = pd.concat(truth, ignore_index=True)
        fields = [f"src_{s}" for s in SOURCES]
        _write_csv(tmp / "truth" / "samples.csv", truth_all.drop(columns=fields))
        source_profiles, source_contributions = truth_tables(truth_all)
        _write_csv(tmp / "truth" / "source_profiles.csv", source_profiles)
        _write_csv(tmp / "truth" / "source_contributions.csv", source_contributions)
        classes = pd.DataFrame(
            {"code": [int(c) for c in LandUse], "name": [c.label for c in LandUse]}
        )
        _write_csv(tmp / "landuse" / "classes.csv", classes)
        all_sources = pd.concat(sources, ignore_index=True)
        all_sources.to_file(tmp / "truth" / "sources.gpkg", layer="sources", driver="GPKG")
        (tmp / "truth" / "summary.json").write_text(
            json.dumps(summary, indent=2) + "\n", encoding="utf-8"
        )
        (tmp / "config.yaml").write_text(CONFIG_YAML, encoding="utf-8")
    return summary


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InputError("--seed", "", f"must be a whole number, got {seed!r}")
    if seed < 0:
        raise InputError("--seed", "", f"must be 0 or more, got {seed}")
    return int(seed)


def _check_size(size_px: int | None) -> int:
    if size_px is None:
        return DEFAULT_SIZE_PX
    if isinstance(size_px, bool) or not isinstance(size_px, int | np.integer):
        raise InputError("--size-px", "", f"must be a whole number, got {size_px!r}")
    if not MIN_SIZE_PX <= size_px <= MAX_SIZE_PX:
        raise InputError(
            "--size-px", "", f"must be between {MIN_SIZE_PX} and {MAX_SIZE_PX}, got {size_px}"
        )
    return int(size_px)


def _profile(land: Landscape, count: int, dtype: str, **extra) -> dict:
    rows, cols = land.shape
    return {
        **GTIFF,
        "width": cols,
        "height": rows,
        "count": count,
        "dtype": dtype,
        "crs": CRS,
        "transform": land.transform,
        "compress": "deflate",
        "predictor": 2 if dtype.startswith("uint") else 3,
        **extra,
    }


def _write_region(root: Path, region: Region) -> None:
    land, name = region.land, region.recipe.name
    for folder in ("imagery", "landuse", "truth/contribution", "truth/background"):
        (root / folder).mkdir(parents=True, exist_ok=True)

    profile = _profile(land, len(BANDS), "uint16", nodata=IMAGERY_NODATA)
    with rasterio.open(root / "imagery" / f"{name}.tif", "w", **profile) as dst:
        dst.write(region.imagery)
        dst.descriptions = BANDS
        dst.scales = (1.0 / REFLECTANCE_SCALE,) * len(BANDS)
        dst.offsets = (0.0,) * len(BANDS)
        dst.update_tags(
            REGION=name,
            PRODUCT="synthetic Sentinel-2 L2A-like surface reflectance",
            SCALING=f"reflectance = DN / {REFLECTANCE_SCALE}, no offset; 0 = nodata",
        )
        for k, band in enumerate(BANDS, start=1):
            s2, nm = SENTINEL2[band]
            dst.update_tags(k, SENTINEL2_BAND=s2, WAVELENGTH_NM=str(nm))

    profile = _profile(land, 1, "uint8", nodata=LANDUSE_NODATA)
    with rasterio.open(root / "landuse" / f"{name}.tif", "w", **profile) as dst:
        dst.write(land.landuse, 1)
        dst.descriptions = ("landuse",)
        dst.write_colormap(1, {int(c): (*rgb, 255) for c, rgb in LANDUSE_COLOURS.items()})
        dst.update_tags(CLASSES=", ".join(f"{int(c)}={c.label}" for c in LandUse), NODATA="0")

    for folder, raster, text in (
        ("truth/contribution", region.cadmium.contribution, "anthropogenic Cd increment, mg/kg"),
        ("truth/background", region.cadmium.background, "natural (background) Cd, mg/kg"),
    ):
        with rasterio.open(
            root / folder / f"{name}.tif", "w", **_profile(land, 1, "float32")
        ) as dst:
            dst.write(raster.astype(np.float32), 1)
            dst.descriptions = (text,)


_TO_WGS84 = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)


def _sample_tables(region: Region) -> tuple[pd.DataFrame, pd.DataFrame]:
    """samples.csv rows (what a user gets) and truth/samples.csv rows (what scores them)."""
    s = region.samples.sort_values(["y", "x"], ascending=[False, True], ignore_index=True)
    name = region.recipe.name
    ids = [f"{name}_{k:04d}" for k in range(1, len(s) + 1)]
    lon, lat = _TO_WGS84.transform(s["x"].to_numpy(), s["y"].to_numpy())
    landuse = [LandUse(int(c)).label for c in s["landuse"]]
    table = pd.DataFrame(
        {
            "sample_id": ids,
            "region": name,
            "lon": np.round(lon, 7),
            "lat": np.round(lat, 7),
            "cd_mgkg": s["cd_mgkg"].round(3),
            **{COLUMNS[m]: s[COLUMNS[m]] for m in METALS[1:]},
            "ph": s["ph"].round(2),
            "is_paddy": s["is_paddy"].astype(bool),
            "landuse": landuse,
        }
    )
    truth = pd.DataFrame(
        {
            "sample_id": ids,
            "region": name,
            "x": s["x"].round(2),
            "y": s["y"].round(2),
            "landuse": landuse,
            "background": s["background"].round(4),
            "contribution": s["contribution"].round(4),
            **{p: s[p].round(4) for p in PATHWAYS},
            "true_cd": s["true_cd"].round(4),
            "cd_mgkg": s["cd_mgkg"].round(3),
            "screening_value": s["screening_value"],
            "label": s["label"].astype(bool),
            **{f"true_{m.lower()}": s[f"true_{m.lower()}"].round(4) for m in METALS[1:]},
            **{f"src_{k}": s[f"src_{k}"] for k in SOURCES},
        }
    )
    return table, truth


def _region_summary(region: Region) -> dict:
    land, cad, s = region.land, region.cadmium, region.samples
    codes, counts = np.unique(land.landuse, return_counts=True)
    sums = np.bincount(land.landuse.ravel(), weights=cad.contribution.ravel(), minlength=256)
    mean = {LandUse(int(c)).label: float(sums[c] / n) for c, n in zip(codes, counts, strict=True)}
    ranking = sorted(mean, key=lambda k: -mean[k])
    auc = oracle_auc(s)
    own_limit = oracle_auc(s, own_limit_score(s, "contribution"))
    visible = oracle_auc(s, own_limit_score(s))
    left, bottom, right, top = land.bounds
    types = cad.sources["type"].value_counts()
    return {
        "title": region.recipe.title,
        "description": region.recipe.description,
        "n": len(s),
        "n_pos": int(s["label"].sum()),
        "oracle_auc": None if auc is None else round(auc, 4),
        "oracle_own_limit_auc": None if own_limit is None else round(own_limit, 4),
        "visible_oracle_auc": None if visible is None else round(visible, 4),
        "landuse_ranking": ranking,
        "landuse_mean_contribution": {k: round(mean[k], 4) for k in ranking},
        "landuse_area_share": {
            LandUse(int(c)).label: round(float(n / land.landuse.size), 4)
            for c, n in zip(codes, counts, strict=True)
        },
        "pathway_mean_contribution": {
            k: round(float(v.mean()), 4) for k, v in cad.pathways.items()
        },
        "n_sources": {str(k): int(v) for k, v in types.items()},
        "strength_scale": round(region.strength_scale, 4),
        "wind_from_deg": list(region.recipe.wind_from_deg),
        "bounds": [left, bottom, right, top],
    }


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, lineterminator="\n")
