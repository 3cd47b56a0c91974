"""``report.html``: one self-contained page that explains a run, built from its run directory.

The report reads only the files of a run directory (``config.yaml``, ``metrics.json``,
``predictions.csv``, ``figures/``, ``sensitivity/``, ``probability/``, ``applicability/``
(a mask on the overlays), ``hotspots.gpkg``, ``candidates.gpkg``,
``landuse_sensitivity.csv``, ``geodetector.csv``, ``run.json``) and the imagery the
resolved configuration points to, so it can be rebuilt at any time
(``soilsource report RUN_DIR``) and never depends on pipeline internals. Optional outputs
that are missing are said to be missing, not silently left out.

Why one file: it is sent by e-mail and opened offline. Images are PNG data URIs, CSS and
the small script are inline, a Content-Security-Policy forbids any request that is not a
``data:`` URI, and there are no fonts or libraries to fetch. Every text that comes from the
inputs (region, class, column names, paths, configuration) goes through Jinja2's
autoescaping, so a region named ``<script>`` is shown, never run.

Maps are layers of the same size stacked in the browser: the true-colour imagery, the
sensitivity and probability overlays (a chooser and an opacity slider), and an SVG with the
samples (coloured by measured value) and the hotspot outlines. Rasters are read decimated
to at most :data:`~soilsource.report.figures.MAP_MAX_PX` pixels on the long side.
"""

from __future__ import annotations

import base64
import json
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata, resources
from os import PathLike
from pathlib import Path
from typing import Any, Literal, cast, overload

import jinja2
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize

from soilsource import __version__
from soilsource.atomic import write_text_atomic
from soilsource.config import Config, load_config
from soilsource.errors import InputError
from soilsource.gisout import CONCENTRATION_CMAP, PROBABILITY_CMAP, SIGNED_CMAP
from soilsource.inputs.imagery import describe_raster, region_path, same_grid
from soilsource.inputs.reference import read_reference
from soilsource.models.registry import LABELS
from soilsource.progress import track
from soilsource.report.figures import (
    MapFurniture,
    MapGrid,
    colour_bar_png,
    colours_hex,
    map_furniture,
    map_grid,
    overlay_png,
    profile_bars_png,
    read_on_grid,
    reliability_png,
    svg_paths,
    symmetric_norm,
    true_colour_bands,
    true_colour_jpeg,
)
from soilsource.rundir import safe_stem
from soilsource.sources.join import factor_label

REPORT_FILE = "report.html"
SIGNIFICANCE = 0.05
"""p-value below which a land-use class is marked significant in the report."""
SENSITIVITY_CMAP = SIGNED_CMAP
VALUE_CMAP = CONCENTRATION_CMAP
"""Measured samples and predicted concentrations share one colour scale."""
PACKAGES = (
    "soilsource",
    "torch",
    "torchvision",
    "rasterio",
    "geopandas",
    "shapely",
    "pyproj",
    "scikit-learn",
    "numpy",
    "pandas",
    "captum",
    "matplotlib",
    "jinja2",
)


@dataclass
class RegionMap:
    """Everything the report draws on one region's map (PNG data URIs and SVG shapes)."""

    key: str
    region: str
    grid: MapGrid | None = None
    imagery: str | None = None
    imagery_label: str = ""
    sensitivity: str | None = None
    sensitivity_bar: str | None = None
    probability: str | None = None
    probability_bar: str | None = None
    probability_rule: str = ""
    concentration: str | None = None
    concentration_bar: str | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    hotspots: list[dict[str, Any]] = field(default_factory=list)
    reference: list[dict[str, Any]] = field(default_factory=list)
    furniture: MapFurniture | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    no_skill: str | None = None
    """Why the region's model has no skill (its maps are greyed); None when it has."""


def write_report(run_dir: str | PathLike[str], *, seconds: dict[str, float] | None = None) -> Path:
    """Build ``RUN_DIR/report.html`` from the files of a run directory, atomically.

    Parameters
    ----------
    run_dir:
        A run directory with at least ``config.yaml`` and ``metrics.json``.
    seconds:
        Step timings of a run that has just finished. The pipeline passes its own, since
        it writes the report as its last step, before it marks ``run.json`` complete; the
        report then calls the run complete. By default, timings and status are those of
        ``run.json``.

    Returns
    -------
    Path
        The report file.

    Raises
    ------
    InputError
        ``run_dir`` is not a run directory (no ``config.yaml`` or ``metrics.json``).
    """
    run_dir = Path(run_dir)
    metrics = _read_json(run_dir / "metrics.json")
    if metrics is not None and metrics.get("several"):
        html = render(gather_several(run_dir, seconds=seconds), "several.html.j2")
    else:
        html = render(gather(run_dir, seconds=seconds))
    return write_text_atomic(run_dir / REPORT_FILE, html)


def write_predict_report(
    out: Path, run_dir: Path, region: str, imagery: Path, notes: list[str]
) -> Path:
    """``OUT/report.html`` of ``soilsource predict``: what was applied to what, and the map.

    The run's samples of ``region`` are drawn where they fall on the new imagery, in the
    colours of the run's report; the run's ``report.reference`` layers too.
    """
    config = read_run_config(run_dir)
    predictions = _read_csv(run_dir / "predictions.csv")
    value_norm = _value_norm(predictions)
    rasters = {kind: out / kind / f"{safe_stem(region)}.tif" for kind in MAP_KINDS[1:]}
    region_map = build_map(
        safe_stem(region),
        region,
        imagery,
        rasters,
        value_norm,
        _read_references(config),
        cast(str, config.metal),  # a predict run is of one metal
    )
    region_map.notes += notes
    if region_map.grid is not None and predictions is not None and value_norm is not None:
        table = predictions[predictions["region"] == region]
        region_map.samples = _samples(table, region_map.grid, value_norm)
    info = describe_raster(imagery, "--imagery")
    bands = ", ".join(info.band_names)
    grid = f"{info.width} x {info.height} px of {info.pixel_size_m:g} m, {info.describe_crs()}"
    probability = rasters["probability"]
    tags = _tags(probability) if probability.is_file() else {}
    rows = [
        ("run", str(run_dir.resolve())),
        ("model", tags.get("MODEL", "")),
        ("region (model and rule)", region),
        ("imagery", str(imagery.resolve())),
        ("bands", bands + " (checked against the training imagery: names, order, scales, "
         "offsets, pixel size)"),
        ("grid", grid),
        ("rule", tags.get("RULE", "")),
        ("outputs", ", ".join(
            f"{kind}/{p.name}" for kind, p in rasters.items() if p.is_file()
        )),
    ]  # fmt: skip
    context = {
        "title": f"soilsource prediction: {config.metal}, region {region}",
        "built": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "rows": rows,
        "map": region_map,
        "value_bar": _value_bar(predictions, cast(str, config.metal)),
        "versions": _versions(),
    }
    return write_text_atomic(out / REPORT_FILE, render(context, "predict.html.j2"))


def render(context: dict[str, Any], template: str = "report.html.j2") -> str:
    """The HTML of a report from its context (autoescaped ``template``: :func:`gather`'s
    context for ``report.html.j2``)."""
    assets = resources.files("soilsource") / "report" / "assets"
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: (assets / name).read_text(encoding="utf-8")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["pvalue"] = _pvalue
    return env.get_template(template).render(
        **context,
        css=(assets / "report.css").read_text(encoding="utf-8"),
        script=(assets / "report.js").read_text(encoding="utf-8"),
    )


# --- reading the run directory -----------------------------------------------------------------


def gather(run_dir: Path, *, seconds: dict[str, float] | None = None) -> dict[str, Any]:
    """The template's context: every table and image of the report, read from ``run_dir``."""
    config, config_text = _read_config(run_dir)
    metrics = _read_json(run_dir / "metrics.json", required=True)
    for key, default in (
        ("metal", config.metal),
        ("rule", config.label.rule),
        ("cv", config.train.cv),
        ("scope", config.train.scope),
        ("optimistic", config.train.cv == "random"),
        ("patch_m", config.patch.size_m),
        ("regions", {}),
    ):
        metrics.setdefault(key, default)
    status = _read_json(run_dir / "run.json") or {}
    predictions = _read_csv(run_dir / "predictions.csv")
    regions = list(metrics.get("regions", {}))
    landuse = _read_csv(run_dir / "landuse_sensitivity.csv")
    geodetector = _read_csv(run_dir / "geodetector.csv")
    candidates = _read_layer(run_dir / "candidates.gpkg")
    missing = [
        name
        for name in (
            "predictions.csv",
            "hotspots.gpkg",
            "candidates.gpkg",
            "sensitivity",
            "probability",
            "figures",
        )
        if not (run_dir / name).exists()
    ]
    if config.landuse is not None:
        missing += [
            n for n in ("landuse_sensitivity.csv", "geodetector.csv") if not (run_dir / n).exists()
        ]
    title = metrics.get("title", metrics.get("metal", config.metal))
    return {
        **_run_header(run_dir, title, metrics, status, seconds, config_text),
        "baselines": _baseline_names(metrics),
        "model_labels": LABELS,
        "inputs": _inputs(config, metrics, predictions),
        "region_rows": _region_rows(metrics),
        "roc": _roc_images(run_dir, regions),
        "maps": _maps(run_dir, config, regions, predictions, metrics, candidates),
        "findings": _findings(metrics, landuse, candidates),
        "candidates": _candidate_tables(candidates, regions),
        "reliability": _reliability(predictions),
        "cv_rows": _cv_rows(metrics),
        "explained_subsets": _explained_subsets(metrics),
        "truth": _truth_scores(run_dir, config, candidates),
        "value_bar": _value_bar(predictions, config.title),
        "landuse": _landuse_tables(landuse, regions),
        "has_landuse": config.landuse is not None,
        "geodetector": [] if geodetector is None else geodetector.to_dict("records"),
        "config": config,
        "missing": missing,
        "significance": SIGNIFICANCE,
        "relative": getattr(config.explain, "aggregation", "mean") == "relative",
        "weighted": getattr(config.explain, "aggregation", "mean") == "exceedance",
    }


def gather_several(run_dir: Path, *, seconds: dict[str, float] | None = None) -> dict[str, Any]:
    """The context of a several-metal run's overview: each run's accuracy and a link to
    its own report, and with ``sources/`` the factor profiles (stacked bars), what each
    factor is tied to on the ground (land use, candidate sources) and its maps."""
    config, config_text = _read_config(run_dir)
    metrics = _read_json(run_dir / "metrics.json", required=True)
    status = _read_json(run_dir / "run.json") or {}
    rows = []
    for key, run in metrics.get("runs", {}).items():
        for region, entry in run.get("regions", {}).items():
            rows.append(
                {
                    "run": key,
                    "title": run.get("title", key),
                    "rule": run.get("rule", ""),
                    "region": region,
                    "n": entry.get("n"),
                    "n_pos": entry.get("n_pos"),
                    "auc": _auc_text(entry),
                    "skill": entry.get("skill"),
                    "reason": entry.get("auc_null_reason", ""),
                    "link": f"{key}/{REPORT_FILE}",
                    "has_report": (run_dir / key / REPORT_FILE).is_file(),
                }
            )
    title = ", ".join(metrics.get("metals", config.metals))
    return {
        **_run_header(run_dir, title, metrics, status, seconds, config_text),
        "rows": rows,
        "sources": _sources_section(run_dir, metrics),
    }


def _run_header(
    run_dir: Path,
    title: str,
    metrics: dict[str, Any],
    status: dict[str, Any],
    seconds: dict[str, float] | None,
    config_text: str,
) -> dict[str, Any]:
    """What every report's context starts with: title, run directory, when it was built,
    the run's status and step times (``seconds`` given: the run writing it is complete),
    its metrics, configuration and versions."""
    return {
        "title": f"soilsource report: {title}",
        "run_dir": str(run_dir.resolve()),
        "built": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "status": "complete" if seconds is not None else status.get("status", "unknown"),
        "metrics": metrics,
        "config_text": config_text,
        "versions": _versions(),
        "seconds": seconds if seconds is not None else status.get("seconds", {}),
    }


def _sources_section(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Profiles, the factor-by-land-use table and each factor's maps (None without sources)."""
    profiles = _read_csv(run_dir / "sources" / "profiles.csv")
    if profiles is None:
        return None
    summary = metrics.get("sources", {})
    factors = []
    shares: dict[str, dict[str, float]] = {}
    maps: list[tuple[RegionMap, str | None]] = []
    for factor, rows in profiles.groupby("factor", sort=True):
        rows = rows.sort_values("share", ascending=False)
        label = f"factor {int(factor)} ({factor_label(profiles, int(factor))})"
        shares[label] = dict(zip(rows["metal"], rows["share"].astype(float), strict=True))
        key = f"sources/factor_{int(factor)}"
        entry: dict[str, Any] = {
            "label": label,
            "shares": ", ".join(f"{m} {v:.0%}" for m, v in zip(rows["metal"], rows["share"],
                                                             strict=True)),
            "regions": [],
        }  # fmt: skip
        folder = run_dir / key
        run = metrics.get("runs", {}).get(key)
        if run is not None and (folder / "metrics.json").is_file():
            factor_metrics = _read_json(folder / "metrics.json", required=True)
            landuse = _read_csv(folder / "landuse_sensitivity.csv")
            candidates = _read_layer(folder / "candidates.gpkg")
            for finding in _findings(factor_metrics, landuse, candidates):
                entry["regions"].append(finding)
            if (folder / "config.yaml").is_file():
                factor_config = read_run_config(folder)
                regions = list(factor_metrics.get("regions", {}))
                predictions = _read_csv(folder / "predictions.csv")
                bar = _value_bar(predictions, factor_config.title)
                for region_map in _maps(
                    folder, factor_config, regions, predictions, factor_metrics, candidates
                ):
                    region_map.key = f"{label}: {region_map.key}"
                    maps.append((region_map, bar))
            entry["link"] = f"{key}/{REPORT_FILE}"
        factors.append(entry)
    return {
        "summary": summary,
        "factors": factors,
        "profile_png": _data_uri(profile_bars_png(shares)),
        "maps": maps,
    }


def read_run_config(run_dir: Path) -> Config:
    """The resolved configuration of a run directory (one line if it is not one)."""
    return _read_config(run_dir)[0]


def _read_config(run_dir: Path) -> tuple[Config, str]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise InputError(run_dir, "config.yaml", "missing: not a soilsource run directory")
    # The resolved configuration: absolute paths, checked like any configuration file.
    return load_config(path), path.read_text(encoding="utf-8")


@overload
def _read_json(path: Path, *, required: Literal[True]) -> dict[str, Any]: ...
@overload
def _read_json(path: Path, *, required: bool = False) -> dict[str, Any] | None: ...
def _read_json(path: Path, *, required: bool = False) -> dict[str, Any] | None:
    if not path.is_file():
        if required:
            raise InputError(path.parent, path.name, "missing: the run has not produced metrics")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(path, "", f"not valid JSON ({exc})") from None


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype={"sample_id": str, "region": str, "class": str})


def _baseline_names(metrics: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for entry in metrics.get("regions", {}).values():
        names += [b for b in entry.get("baselines", {}) if b not in names]
    return names


def _inputs(
    config: Config, metrics: dict[str, Any], predictions: pd.DataFrame | None
) -> list[tuple[str, Any]]:
    """(what, value) rows of the inputs table: files, columns, label rule, patch, CV."""
    samples = config.samples
    columns = ", ".join(
        f"{role} = {getattr(samples, role)}"
        for role in ("value", "x", "y", "region", "id", "ph", "paddy")
        if getattr(samples, role)
    )
    imagery = config.imagery.path
    rows = [
        ("metal", config.metal),
        ("samples", str(samples.path)),
        ("sample columns", columns + (f" (CRS {samples.crs})" if samples.crs else "")),
        ("imagery", ", ".join(map(str, imagery)) if isinstance(imagery, list) else str(imagery)),
        ("bands", ", ".join(metrics.get("bands", []))),
    ]
    if config.landuse is not None:
        rows.append(("land use", f"{config.landuse.path} (classes: {config.landuse.classes})"))
    else:
        rows.append(("land use", "none configured (no land-use ranking)"))
    label = config.label.model_dump(exclude_none=True)
    rows.append(
        ("label rule", metrics.get("rule") or ", ".join(f"{k} = {v}" for k, v in label.items()))
    )
    rows.append(("patch", f"{config.patch.size_m:g} m ({metrics.get('patch_px', '?')} px)"))
    scales = " and ".join(f"{m:g} m" for m in config.patch.context_m)
    rows.append(
        (
            "context bands",
            f"every band also smoothed by a Gaussian of {scales} (the @ctx bands), so that a "
            "patch carries what lies around it; every model reads them (patch.context_m)"
            if scales
            else "none (patch.context_m: [])",
        )
    )
    explain = config.explain
    filled = {
        "clean": f"filled in turn with the {explain.typical_k} typical pixels of the clean "
        "samples' patches (below their own limit), the drops weighted by how common each is "
        "(explain.occlude_with: clean)",
        "typical": f"filled in turn with the region's {explain.typical_k} typical pixels, the "
        "drops weighted by how common each is (explain.occlude_with: typical)",
        "mean": "filled with the band means (explain.occlude_with: mean)",
    }[explain.occlude_with]
    rows.append(
        ("occlusion", f"window {explain.window_m:g} m, stride {explain.stride_m:g} m; {filled}")
    )
    train = config.train
    rows.append(
        (
            "cross-validation",
            f"{train.cv}, {train.folds} folds, scope {train.scope}, seed {train.seed}",
        )
    )
    if predictions is not None:
        rows.append(
            ("samples used", f"{len(predictions)} in {predictions['region'].nunique()} regions")
        )
    return rows


def _region_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, entry in metrics.get("regions", {}).items():
        rows.append(
            {
                "region": name,
                "n": entry.get("n"),
                "n_pos": entry.get("n_pos"),
                "n_dropped": entry.get("n_dropped", 0),
                "auc": _auc_text(entry),
                "reason": entry.get("auc_null_reason"),
                "baselines": {b: _auc_text(e) for b, e in entry.get("baselines", {}).items()},
                "diffs": {b: _diff_text(d) for b, d in entry.get("auc_diff", {}).items()},
                "skill": {True: "yes", False: "no"}.get(entry.get("skill"), ""),
                "design": _design_text(entry.get("cv") or {}),
            }
        )
    return rows


def _diff_text(diff: list[float] | None) -> str:
    """``+0.031 [-0.012, +0.074]``: SI-LICNet minus a baseline, paired 95 % interval."""
    if not diff:
        return "n/a"
    d, lo, hi = diff
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _design_text(cv: dict[str, Any]) -> str:
    """The fold design of a region and the median test-to-training distance."""
    if not cv:
        return ""
    name = cv.get("design", "")
    if name == "knndm":
        name = f"kNNDM ({cv.get('method')} folds)"
    median = (cv.get("test_to_train_m") or {}).get("q50")
    return name + (f", test {median:g} m from training (median)" if median is not None else "")


def _auc_text(entry: dict[str, Any]) -> str:
    if entry.get("auc") is None:
        return "n/a"
    ci = entry.get("auc_ci95")
    return f"{entry['auc']:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _roc_images(run_dir: Path, regions: list[str]) -> list[tuple[str, str | None]]:
    return [(r, _data_uri(run_dir / "figures" / f"roc_{safe_stem(r)}.png")) for r in regions]


def _data_uri(path_or_bytes: Path | bytes | None, mime: str = "image/png") -> str | None:
    if isinstance(path_or_bytes, Path):
        if not path_or_bytes.is_file():
            return None
        path_or_bytes = path_or_bytes.read_bytes()
    if path_or_bytes is None:
        return None
    return f"data:{mime};base64," + base64.b64encode(path_or_bytes).decode("ascii")


# --- maps ----------------------------------------------------------------------------------------


def _map_keys(run_dir: Path, region: str) -> list[str]:
    """File stems of a region's rasters: the region, or region__raster when it spans several.

    Stems as the pipeline writes them (:func:`~soilsource.rundir.safe_stem`).
    """
    own = safe_stem(region)
    stems = {
        p.stem
        for folder in ("sensitivity", "probability")
        for p in (run_dir / folder).glob("*.tif")
        if p.stem == own or p.stem.startswith(f"{own}__")
    }
    return sorted(stems) or [own]


def _imagery_path(config: Config, region: str, key: str, outputs: list[Path]) -> Path | None:
    """The raster a map's outputs were made on: by template, by name, or by grid.

    A region that reads one raster of a list writes its outputs under the region's own
    name, so that raster is the one whose grid the outputs share.
    """
    if config.imagery.is_template:
        path: Path | None = region_path(cast(Path, config.imagery.path), region)
    else:
        paths = [p for p in config.imagery.paths if Path(p).is_file()]
        named = [p for p in paths if safe_stem(f"{region}__{p.stem}") == key]
        path = named[0] if named else _same_grid(paths, outputs)
    return path if path is not None and Path(path).is_file() else None


def _same_grid(candidates: list[Path], outputs: list[Path]) -> Path | None:
    import rasterio

    if len(candidates) == 1 or not outputs:
        return candidates[0] if candidates else None
    with rasterio.open(outputs[0]) as out:
        for path in candidates:
            with rasterio.open(path) as src:
                if same_grid(src, out):
                    return path
    return None


def _maps(
    run_dir: Path,
    config: Config,
    regions: list[str],
    predictions: pd.DataFrame | None,
    metrics: dict[str, Any],
    candidates: Any,
) -> list[RegionMap]:
    hotspots = _read_layer(run_dir / "hotspots.gpkg")
    value_norm = _value_norm(predictions)
    reference = _read_references(config)
    maps: list[RegionMap] = []
    for region in track(regions, "report maps"):
        entry = metrics.get("regions", {}).get(region, {})
        for key in _map_keys(run_dir, region):
            rasters = {kind: run_dir / kind / f"{key}.tif" for kind in MAP_KINDS}
            outputs = [p for p in rasters.values() if p.is_file()]
            imagery = _imagery_path(config, region, key, outputs)
            region_map = build_map(
                key, region, imagery, rasters, value_norm, reference, config.title
            )
            if entry.get("skill") is False:
                region_map.no_skill = entry.get("skill_reason") or "the AUC interval reaches 0.5"
            if region_map.grid is not None:
                if predictions is not None and value_norm is not None:
                    table = predictions[predictions["region"] == region]
                    region_map.samples = _samples(table, region_map.grid, value_norm)
                if hotspots is not None:
                    frame = hotspots[hotspots["region"] == region]
                    region_map.hotspots = _hotspot_paths(frame, region_map.grid)
                if candidates is not None:
                    frame = candidates[candidates["region"] == region]
                    region_map.candidates = _candidate_paths(frame, region_map.grid)
            maps.append(region_map)
    return maps


MAP_KINDS = ("sensitivity", "probability", "concentration", "applicability")
"""The rasters a map overlays, by their folder in a run directory."""


def build_map(
    key: str,
    region: str,
    imagery: Path | None,
    rasters: dict[str, Path],
    value_norm: Normalize | None,
    reference: list[tuple[str, Any]],
    metal: str = "Cd",
) -> RegionMap:
    """One region's map: imagery, overlays of the rasters that exist, reference outlines,
    coordinates, scale bar and north arrow (samples and hotspots are the caller's)."""
    result = RegionMap(key=key, region=region)
    existing = [p for p in rasters.values() if p.is_file()]
    base = next((p for p in (imagery, *existing) if p and p.is_file()), None)
    if base is None:
        result.notes.append("no imagery, sensitivity or probability raster for this region")
        return result
    grid = result.grid = map_grid(base)
    crs = _raster_crs(base)
    result.furniture = map_furniture(grid, crs)
    if imagery is not None:
        result.imagery = _data_uri(true_colour_jpeg(imagery, grid), "image/jpeg")
        result.imagery_label = _composite_label(imagery)
    else:
        result.notes.append("imagery not found (the configuration's path); no background")
    applicability = rasters.get("applicability")
    outside = _outside_applicability(applicability, grid, result) if applicability else None
    sensitivity = rasters.get("sensitivity")
    if sensitivity is not None and sensitivity.is_file():
        values = _masked(read_on_grid(sensitivity, grid)[0], outside)
        norm = symmetric_norm(values)
        result.sensitivity = _data_uri(
            overlay_png(values, SENSITIVITY_CMAP, norm, fade_centre=True)
        )
        aggregation = _tags(sensitivity).get("AGGREGATION", "")
        relative = {"relative": ", relative", "mean, weighted by sample": " × exceedance"}.get(
            aggregation, ""
        )
        concentration = rasters.get("concentration")  # written for a model of the concentration
        value_model = concentration is not None and concentration.is_file()
        unit = "std. log concentration" if value_model else "probability"
        label = f"sensitivity: drop in {unit}{relative}"
        result.sensitivity_bar = _data_uri(colour_bar_png(SENSITIVITY_CMAP, norm, label))
    elif sensitivity is not None:
        result.notes.append("no sensitivity map (no trained model for this region)")
    probability = rasters.get("probability")
    if probability is not None and probability.is_file():
        values = _masked(read_on_grid(probability, grid)[0], outside)
        norm = Normalize(0, 1)
        result.probability = _data_uri(overlay_png(values, PROBABILITY_CMAP, norm))
        result.probability_bar = _data_uri(
            colour_bar_png(PROBABILITY_CMAP, norm, "probability of exceeding the rule (0-1)")
        )
        result.probability_rule = _tags(probability).get("RULE", "")
    else:
        result.notes.append("no probability map")
    concentration = rasters.get("concentration")
    if concentration is not None and concentration.is_file():
        values = read_on_grid(concentration, grid)[0]
        value_scale = value_norm or _positive_norm(values)
        if value_scale is not None:
            result.concentration = _data_uri(overlay_png(values, VALUE_CMAP, value_scale))
            result.concentration_bar = _data_uri(
                colour_bar_png(
                    VALUE_CMAP,
                    value_scale,
                    f"predicted median {metal}, mg/kg",
                    log=isinstance(value_scale, LogNorm),
                )
            )
    for name, frame in reference:
        shapes = frame.to_crs(crs) if frame.crs is not None else frame
        paths = [d for d in svg_paths(shapes.geometry, grid) if d]
        result.reference += [{"d": d, "title": name} for d in paths]
    return result


def _raster_crs(path: Path) -> Any:
    import rasterio

    with rasterio.open(path) as src:
        return src.crs


def _tags(path: Path) -> dict[str, str]:
    import rasterio

    with rasterio.open(path) as src:
        return {**src.tags(1), **src.tags()}


def _positive_norm(values: np.ma.MaskedArray) -> Normalize | None:
    """A log colour scale over the 2nd-98th percentiles of positive values (None if none)."""
    valid = values.compressed()
    valid = valid[valid > 0]
    if valid.size == 0:
        return None
    lo, hi = np.percentile(valid, [2, 98])
    return LogNorm(lo, hi if hi > lo else lo * 2)


def _read_references(config: Config) -> list[tuple[str, Any]]:
    """(name, GeoDataFrame) of each ``report.reference`` file."""
    return [(Path(p).stem, read_reference(p)) for p in config.report.reference]


def _outside_applicability(path: Path, grid: MapGrid, result: RegionMap) -> np.ndarray | None:
    """Where the region's area of applicability (``applicability/KEY.tif``, DI above the
    ``AOA_THRESHOLD`` tag) excludes the display grid's pixels; a note says how much."""
    import rasterio
    from rasterio.enums import Resampling

    if not path.is_file():
        return None
    with rasterio.open(path) as src:
        limit = float(src.tags().get("AOA_THRESHOLD", "nan"))
    di = read_on_grid(path, grid, resampling=Resampling.nearest)[0]
    if not np.isfinite(limit):
        return None
    outside = np.ma.filled(di > limit, False)
    known = ~np.ma.getmaskarray(di)
    if known.any():
        share = float(outside[known].mean())
        result.notes.append(
            f"{share:.0%} of the mapped area lies outside the area of applicability "
            f"(dissimilarity index above {limit:.3g}; Meyer & Pebesma 2021): left blank on "
            "the overlays, where the model would extrapolate."
        )
    return outside


def _masked(values: np.ma.MaskedArray, outside: np.ndarray | None) -> np.ma.MaskedArray:
    if outside is None:
        return values
    return np.ma.masked_where(outside | np.ma.getmaskarray(values), values)


def _composite_label(path: Path) -> str:
    """'true colour (red, green, blue)' or 'false colour: R = swir1, G = nir, B = red'."""
    import rasterio

    with rasterio.open(path) as src:
        names = [d or f"band {i + 1}" for i, d in enumerate(src.descriptions)]
    bands = true_colour_bands(tuple(src.descriptions))
    chosen = [names[b - 1] for b in bands]
    if [c.lower() for c in chosen] == ["red", "green", "blue"]:
        return "true colour (red, green, blue bands)"
    if len(set(bands)) == 1:
        return f"grey scale of {chosen[0]}"
    return "false colour: R = {}, G = {}, B = {}".format(*chosen)


def _value_norm(predictions: pd.DataFrame | None) -> Normalize | None:
    """Colour scale of measured values, shared by all maps (log when all values are > 0)."""
    if predictions is None or predictions.empty:
        return None
    values = predictions["value"].to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    lo, hi = np.percentile(values, [2, 98])
    if lo > 0 and hi > lo:
        return LogNorm(lo, hi)
    return Normalize(lo, hi if hi > lo else lo + 1)


def _value_bar(predictions: pd.DataFrame | None, metal: str) -> str | None:
    norm = _value_norm(predictions)
    if norm is None:
        return None
    label = f"measured {metal}, mg/kg" + (" (log scale)" if isinstance(norm, LogNorm) else "")
    return _data_uri(colour_bar_png(VALUE_CMAP, norm, label, log=isinstance(norm, LogNorm)))


def _samples(table: pd.DataFrame, grid: MapGrid, norm: Normalize) -> list[dict[str, Any]]:
    """SVG markers of samples on the grid: position, colour of the value, label, tooltip."""
    col, row = grid.pixel_of(table["x"].to_numpy(), table["y"].to_numpy())
    inside = (col >= 0) & (col <= grid.width) & (row >= 0) & (row <= grid.height)
    fill = colours_hex(table["value"].to_numpy(dtype=float), VALUE_CMAP, norm)
    out = []
    for i in np.flatnonzero(inside):
        r = table.iloc[i]
        prob = r.get("prob")
        out.append(
            {
                "cx": round(float(col[i]), 1),
                "cy": round(float(row[i]), 1),
                "fill": fill[i],
                "positive": bool(r["label"]),
                "title": f"{r['sample_id']}: {r['value']:g} mg/kg, "
                + ("contaminated" if r["label"] else "clean")
                + (f", out-of-fold probability {prob:.2f}" if pd.notna(prob) else ""),
            }
        )
    return out


def _read_layer(path: Path):
    """A GeoPackage layer of the run directory (hotspots, candidates: the layer named as
    the file), or None when absent."""
    if not path.is_file():
        return None
    import geopandas as gpd

    return gpd.read_file(path, layer=path.stem)


def _hotspot_paths(frame, grid: MapGrid) -> list[dict[str, Any]]:
    """SVG path data of hotspot polygons in display pixels (simplified to half a pixel)."""
    out = []
    paths = svg_paths(frame.geometry, grid)
    for d, (_, row) in zip(paths, frame.iterrows(), strict=True):
        title = f"hotspot {row.get('hotspot_id', '')}: {row.get('area_m2', 0):,.0f} m²"
        if isinstance(row.get("landuse"), str):
            title += f", mostly {row['landuse']}"
        out.append({"d": d, "title": title})
    return out


def _candidate_paths(frame, grid: MapGrid) -> list[dict[str, Any]]:
    """SVG paths of candidate sources with a tooltip and their rank at a point inside."""
    out = []
    paths = svg_paths(frame.geometry, grid)
    for d, (_, row) in zip(paths, frame.iterrows(), strict=True):
        point = row.geometry.representative_point()
        col, line = grid.pixel_of(np.array([point.x]), np.array([point.y]))
        title = (
            f"candidate {row['rank']}: {row['class']}, {row['area_m2']:,.0f} m², effect "
            f"{row['effect']:.3g} [{row['effect_lo']:.3g}, {row['effect_hi']:.3g}], "
            f"{row['n_samples']} samples"
        )
        out.append(
            {
                "d": d,
                "title": title,
                "x": round(float(col[0]), 1),
                "y": round(float(line[0]), 1),
                "label": str(row["rank"]),
            }
        )
    return out


# --- land use, provenance -------------------------------------------------------------------------


def _landuse_tables(
    frame: pd.DataFrame | None, regions: list[str]
) -> list[tuple[str, list[dict[str, Any]]]]:
    if frame is None:
        return []
    tables = []
    for region in regions:
        rows = frame[frame["region"] == region].sort_values("rank", na_position="last")
        if not rows.empty:
            tables.append((region, rows.to_dict("records")))
    return tables


def _candidate_tables(candidates: Any, regions: list[str], k: int = 10) -> list[tuple[str, list]]:
    """The top ``k`` candidates of each region (rank, class, area, effect, measured nearby)."""
    if candidates is None:
        return []
    out = []
    for region in regions:
        rows = candidates[candidates["region"] == region].sort_values("rank").head(k)
        if len(rows):
            out.append((region, rows.drop(columns="geometry").to_dict("records")))
    return out


def _findings(metrics: dict[str, Any], landuse: pd.DataFrame | None, candidates: Any) -> list:
    """One row per region for the summary at the top: skill, top candidates, drivers, and
    what cannot be interpreted and why."""
    rows = []
    for region, entry in metrics.get("regions", {}).items():
        skill = entry.get("skill")
        drivers: list[str] = []
        if landuse is not None and "driver" in landuse.columns:
            mine = landuse[(landuse["region"] == region) & landuse["driver"].astype(bool)]
            drivers = mine.sort_values("rank")["class"].tolist()
        top: list[str] = []
        if candidates is not None:
            mine = candidates[candidates["region"] == region].sort_values("rank").head(3)
            top = [
                f"#{r['rank']} {r['class']} ({r['area_m2'] / 1e4:.1f} ha, nearby up to "
                f"{r['value_max']:.3g} mg/kg)"
                for _, r in mine.iterrows()
            ]
        rows.append(
            {
                "region": region,
                "auc": _auc_text(entry),
                "skill": skill,
                "reason": entry.get("skill_reason", ""),
                "drivers": drivers,
                "top": top,
            }
        )
    return rows


def _reliability(predictions: pd.DataFrame | None) -> str | None:
    """Reliability diagram of the out-of-fold probabilities, one line per region."""
    if predictions is None or "prob" not in predictions.columns:
        return None
    groups = {
        str(region): (part["label"].to_numpy(float), part["prob"].to_numpy(float))
        for region, part in predictions.groupby("region", sort=False)
    }
    return _data_uri(reliability_png(groups))


def _explained_subsets(metrics: dict[str, Any]) -> list[str]:
    """'REGION: 2,000 of 20,000 samples' for each region explained on a subset
    (``explain.max_samples``)."""
    out = []
    for region, entry in metrics.get("regions", {}).items():
        n, explained = entry.get("n"), entry.get("explained_samples")
        if n is not None and explained is not None and explained < n:
            out.append(f"{region}: {explained:,} of {n:,} samples")
    return out


def _cv_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Per region: the fold design, distances, and how many test patches overlap training."""
    rows = []
    overall = metrics.get("overall", {})
    for region, entry in metrics.get("regions", {}).items():
        cv = entry.get("cv") or {}
        scope = overall.get(region) or overall.get("pooled") or {}
        rows.append(
            {
                "region": region,
                "design": _design_text(cv),
                "folds": scope.get("folds"),
                "overlap": scope.get("overlap_share"),
                "brier": entry.get("brier"),
            }
        )
    return rows


def _truth_scores(run_dir: Path, config: Config, candidates: Any) -> dict[str, Any] | None:
    """The run scored against a synthetic city's truth, when the samples come from one
    (``soilsource demo``): source-pixel AUC, land-use Spearman, precision of candidates."""
    city = Path(config.samples.path).parent
    if not (city / "truth" / "summary.json").is_file():
        return None
    from soilsource.explain.scoring import candidate_scores, score_run
    from soilsource.explain.sensitivity import occlusion_px

    if not (run_dir / "landuse_sensitivity.csv").is_file():
        return None
    scores = score_run(run_dir, city)
    pixel_m = json.loads((city / "truth" / "summary.json").read_text(encoding="utf-8"))["pixel_m"]
    window_px, _ = occlusion_px(config.explain.window_m, config.explain.stride_m, pixel_m)
    if candidates is not None:
        precision = candidate_scores(candidates, city, cell_px=2 * window_px)
        scores = scores.merge(precision, on="region", how="left")
    return {
        "rows": scores.to_dict("records"),
        "mean_auc": float(scores["source_auc"].mean()),
        "mean_spearman": float(scores["spearman_landuse"].mean()),
    }


def _versions() -> list[tuple[str, str]]:
    out = [("python", platform.python_version())]
    for name in PACKAGES:
        try:
            out.append((name, __version__ if name == "soilsource" else metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, "not installed"))
    try:
        import rasterio

        out.append(("GDAL", rasterio.__gdal_version__))
    except ImportError:  # pragma: no cover - rasterio is a dependency
        pass
    return out


def _num(value: Any, digits: int = 3) -> str:
    """A number for a table: ``digits`` significant digits, blank for missing."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{float(value):.{digits}g}"


def _pvalue(value: Any) -> str:
    """A p-value: 3 decimals, or '< 0.001'."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


__all__ = [
    "REPORT_FILE",
    "gather",
    "read_run_config",
    "render",
    "write_predict_report",
    "write_report",
]
