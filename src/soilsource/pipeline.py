"""``soilsource run``: the whole pipeline, from a configuration to a run directory.

inputs -> labels -> patches (:mod:`soilsource.dataset`) -> SI-LICNet and baselines under
spatial cross-validation (:mod:`soilsource.evaluation`) -> out-of-fold predictions,
metrics and ROC curves -> occlusion sensitivity of the final models, mosaicked per region
(:mod:`soilsource.explain`) -> land-use statistics and hotspots (:mod:`soilsource.zones`,
:mod:`soilsource.hotspots`) -> probability maps (:mod:`soilsource.mapping`).

Every output is written atomically and the run directory says whether it is complete
(:mod:`soilsource.rundir`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from soilsource.atomic import write_text_atomic
from soilsource.compute import Session, check_scheduler, compute_session
from soilsource.config import Config, load_config
from soilsource.dataset import Dataset, RegionSamples, load_dataset
from soilsource.evaluation import CVResult, cross_validate
from soilsource.explain import sensitivity
from soilsource.explain.mosaic import write_sensitivity
from soilsource.figures import roc_figure
from soilsource.hotspots import raster_hotspot_threshold, region_hotspots, write_hotspots
from soilsource.inputs import open_landuse
from soilsource.mapping import write_probability_map
from soilsource.modelio import save_model
from soilsource.models import SILICNet
from soilsource.models.baselines import make_baseline
from soilsource.patches import Patches
from soilsource.progress import warn
from soilsource.report import write_report
from soilsource.resume import Checkpoints
from soilsource.rundir import mark, prepare, safe_stem
from soilsource.rundir import resume as resume_run
from soilsource.training import Standardized, TorchPatchClassifier, TrainSettings
from soilsource.zones import region_landuse_statistics, write_geodetector, write_landuse_sensitivity

MODEL = "silicnet"
"""Name of the method's own network in metrics, predictions and model files."""

PREDICTION_COLUMNS = ["sample_id", "region", "x", "y", "value", "label", "prob", "fold"]


@dataclass
class RunResult:
    """What a run produced: its directory, metrics and per-scope cross-validation."""

    out: Path
    metrics: dict[str, Any]
    cv: dict[str, dict[str, CVResult]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run(
    config: Config | str | PathLike[str],
    out: str | PathLike[str],
    *,
    force: bool = False,
    device: str | None = None,
    settings: TrainSettings | None = None,
    resume: bool = False,
) -> RunResult:
    """Run the whole pipeline of ``config`` into the run directory ``out``.

    Parameters
    ----------
    config:
        A :class:`~soilsource.config.Config` or the path of its YAML file.
    out:
        Run directory; a complete run there is replaced only with ``force``.
    device:
        Overrides ``compute.device`` (``auto``, ``cpu`` or ``cuda``).
    settings:
        Training hyperparameters of the torch models (default: :class:`TrainSettings`
        with ``train.max_epochs`` and ``train.patience`` of the configuration).
    resume:
        Continue the unfinished run in ``out`` (killed, say): finished folds and
        region rasters are kept (:mod:`soilsource.resume`); the configuration must be
        the killed run's.

    Raises
    ------
    InputError
        Bad inputs or configuration (nothing is marked complete).
    """
    if not isinstance(config, Config):
        config = load_config(config)
    out = resume_run(out, force=force) if resume else prepare(out, force=force)
    return execute(config, out, device=device, settings=settings, resume=resume)


def execute(
    config: Config,
    out: Path,
    *,
    device: str | None = None,
    settings: TrainSettings | None = None,
    resume: bool = False,
) -> RunResult:
    """The pipeline proper, into a run directory made by :func:`~soilsource.rundir.prepare`.

    With ``resume``, into one checked by :func:`~soilsource.rundir.resume`: the
    checkpoints must be of the same configuration. A complete run deletes them.
    """
    if device is not None:
        config.compute.device = device
    settings = train_settings(config, settings)
    if config.compute.scheduler is not None:
        check_scheduler(config.compute.scheduler)  # a wrong address fails now, not after training
    checkpoints = Checkpoints(out, settings, config.compute.device)
    (checkpoints.resume if resume else checkpoints.start)(_results_yaml(config))
    seconds: dict[str, float] = {}
    _write_config(out / "config.yaml", config)
    with _timed(seconds, "inputs"):
        dataset = load_dataset(config)
    with _timed(seconds, "training"):
        cv = evaluate(dataset, config, settings=settings, checkpoints=checkpoints)
    metrics = build_metrics(dataset, config, cv)
    with _timed(seconds, "outputs"):
        write_predictions(out / "predictions.csv", dataset, cv)
        write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        write_roc_figures(out / "figures", dataset, cv)
        save_models(out / "models", dataset, config, cv)
    # Occlusion batches and map tiles run here, or on the Dask cluster of compute.scheduler.
    with compute_session(config.compute.scheduler) as session:
        with _timed(seconds, "explanation"):
            explain(out, dataset, config, cv[MODEL], session=session)
        with _timed(seconds, "probability maps"):
            probability_maps(out / "probability", dataset, config, cv[MODEL], session=session)
    # The report reads the run directory, so it comes last, before the run is complete.
    with _timed(seconds, "report"):
        write_report(out, seconds=seconds)
    mark(out, "complete", seconds=seconds)
    checkpoints.clear()
    return RunResult(out, metrics, cv, seconds)


# --- models and cross-validation --------------------------------------------------------------


def train_settings(config: Config, settings: TrainSettings | None = None) -> TrainSettings:
    """``settings`` if given, else the defaults with the configuration's ``train`` overrides."""
    if settings is not None:
        return settings
    keys = ("max_epochs", "patience")
    return TrainSettings(**{k: getattr(config.train, k) for k in keys if getattr(config.train, k)})


def model_factory(
    name: str, dataset: Dataset, config: Config, settings: TrainSettings | None
) -> Callable[[], Any]:
    """A zero-argument factory of a fresh, untrained estimator for ``name``.

    Torch models are wrapped in :class:`~soilsource.training.Standardized`, so each
    fold's band statistics come from its training samples only; the random forest
    reads physical values (NaN where there is no data) and needs no scaling.
    """
    channels, size = len(dataset.band_names), dataset.patch_px
    device = config.compute.device

    def torch_model(build: Callable[[], torch.nn.Module]) -> Callable[[], Standardized]:
        return lambda: Standardized(TorchPatchClassifier(build(), settings=settings, device=device))

    if name == MODEL:
        return torch_model(lambda: SILICNet(channels, patch_px=size))
    if name == "random_forest":
        return lambda: make_baseline(name, channels, size)
    return torch_model(lambda: make_baseline(name, channels, size))


def evaluate(
    dataset: Dataset,
    config: Config,
    *,
    settings: TrainSettings | None = None,
    checkpoints: Checkpoints | None = None,
) -> dict[str, dict[str, CVResult]]:
    """Cross-validate SI-LICNet and every configured baseline on the same folds.

    Returns ``{model: {scope_key: CVResult}}`` where the scope key is the region name
    (scope ``region``) or ``"pooled"``. The folds depend only on the samples, labels
    and seed, so every model sees the same folds. Finished folds are kept in, and
    taken from, ``checkpoints``.
    """
    models = [MODEL, *config.model.baselines]
    results: dict[str, dict[str, CVResult]] = {}
    for name in models:
        factory = model_factory(name, dataset, config, settings)
        results[name] = {}
        for key, patches, table in _scopes(dataset, config):
            results[name][key] = cross_validate(
                factory,
                physical(patches),
                table["label"].to_numpy(),
                table[["x", "y"]].to_numpy(),
                table["region"].to_numpy(),
                folds=config.train.folds,
                cv=config.train.cv,
                block_m=block_m(config, table),
                buffer_m=config.train.buffer_m,
                patch_m=config.patch.size_m,
                seed=config.train.seed,
                device=config.compute.device,
                settings=settings,
                description=f"{key}: {name}",
                checkpoint=checkpoints.folds(name, key) if checkpoints else None,
            )
    return results


def _scopes(dataset: Dataset, config: Config):
    if config.train.scope == "pooled":
        patches, table = dataset.concat()
        yield "pooled", patches, table
        return
    for region in dataset:
        yield region.name, region.patches, region.table


def physical(patches: Patches) -> np.ndarray:
    """Patch values in physical units with NaN where there is no data."""
    data = patches.data.copy()
    data[np.broadcast_to(~patches.valid[:, None], data.shape)] = np.nan
    return data


def block_m(config: Config, table: pd.DataFrame) -> float:
    """Spatial CV block side: the configured one, or the default from the samples' extent."""
    extent = min(np.ptp(table["x"].to_numpy()), np.ptp(table["y"].to_numpy()))
    return config.train.default_block_m(config.patch.size_m, float(extent))


def region_result(cv: dict[str, CVResult], region: str) -> CVResult:
    """The cross-validation that covers ``region`` (its own, or the pooled one)."""
    return cv[region] if region in cv else cv["pooled"]


def oof(
    cv: dict[str, CVResult], region: RegionSamples, dataset: Dataset
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities and fold ids of ``region``'s samples, in table order."""
    result = region_result(cv, region.name)
    if region.name in cv:
        return result.proba, result.fold
    start = 0
    for other in dataset:
        if other.name == region.name:
            break
        start += len(other)
    sel = slice(start, start + len(region))
    return result.proba[sel], result.fold[sel]


# --- explanation and maps ----------------------------------------------------------------------


def final_model(cv: dict[str, CVResult], region: str) -> Standardized | None:
    """The SI-LICNet trained on all samples of ``region``'s scope (None if untrained)."""
    final = region_result(cv, region).final
    return final if isinstance(final, Standardized) else None


def output_name(region: RegionSamples, k: int) -> str:
    """File stem of a region's rasters: the region, or region__raster when it spans several."""
    if len(region.rasters) == 1:
        return safe_stem(region.name)
    return safe_stem(f"{region.name}__{region.rasters[k].path.stem}")


def sensitivity_maps(
    model: Standardized,
    patches: Patches,
    config: Config,
    pixel_m: float,
    batch: int = 16,
    *,
    session: Session | None = None,
) -> np.ndarray:
    """Occlusion sensitivity (N, H, W) of every patch under the final SI-LICNet.

    Window and stride are set in metres (``explain.window_m``, ``explain.stride_m``) and
    rounded to whole pixels of the imagery; the baseline is ``explain.baseline`` in
    standardised units (0 = the band mean of the training samples). The work is
    :func:`soilsource.explain.sensitivity.sensitivity_maps`, in batches on ``session``.
    """
    window_px, stride_px = sensitivity.occlusion_px(
        config.explain.window_m, config.explain.stride_m, pixel_m
    )
    return sensitivity.sensitivity_maps(
        model.inner.module,
        model.stats_,
        patches,
        window_px,
        stride_px,
        config.explain.baseline,
        batch=batch,
        session=session,
    )


def explain(
    out: Path,
    dataset: Dataset,
    config: Config,
    cv: dict[str, CVResult],
    *,
    session: Session | None = None,
) -> None:
    """Sensitivity rasters, land-use statistics and hotspots of every region."""
    zones, hotspots = [], []
    for region in dataset:
        model = final_model(cv, region.name)
        if model is None:
            warn(f"region '{region.name}': no trained model, so no sensitivity map")
            continue
        raster_of = region.table["raster"].to_numpy()
        for k, raster in enumerate(region.rasters):
            members = np.flatnonzero(raster_of == k)
            if len(members) == 0:
                continue
            path = out / "sensitivity" / f"{output_name(region, k)}.tif"
            if not path.is_file():  # else finished before a resumed run's kill
                patches = region.patches.subset(members)
                maps = sensitivity_maps(
                    model, patches, config, raster.pixel_size_m, session=session
                )
                write_sensitivity(
                    path,
                    maps,
                    patches.row_off,
                    patches.col_off,
                    transform=raster.transform,
                    crs=raster.crs,
                    width=raster.width,
                    height=raster.height,
                    aggregation=config.explain.aggregation,
                )
            landuse = open_landuse(config.landuse, region.name) if config.landuse else None
            classes = landuse.classes if landuse else None
            # One threshold for the zone statistics and the polygons (one pass over the map).
            hot = raster_hotspot_threshold(path, config.explain.hotspot_share)
            if landuse is not None:
                zones.append(
                    region_landuse_statistics(
                        path, landuse, classes, region=region.name, threshold=hot
                    )
                )
            hotspots.append(
                region_hotspots(path, landuse, classes, region=region.name, threshold=hot)
            )
    if zones:
        write_landuse_sensitivity(out / "landuse_sensitivity.csv", zones)
        write_geodetector(out / "geodetector.csv", zones)
    crs = dataset.regions[0].rasters[0].crs
    write_hotspots(out / "hotspots.gpkg", hotspots, crs=crs)


def probability_maps(
    folder: Path,
    dataset: Dataset,
    config: Config,
    cv: dict[str, CVResult],
    *,
    session: Session | None = None,
) -> None:
    """``probability/REGION.tif``: the final SI-LICNet's probability map of each region."""
    for region in dataset:
        model = final_model(cv, region.name)
        if model is None:
            continue
        for k, raster in enumerate(region.rasters):
            if (folder / f"{output_name(region, k)}.tif").is_file():
                continue  # finished before a resumed run's kill
            write_probability_map(
                folder / f"{output_name(region, k)}.tif",
                model.inner.module,
                model.stats_,
                raster,
                max_nodata_share=config.patch.max_nodata_share,
                session=session,
            )


# --- outputs ------------------------------------------------------------------------------


def build_metrics(
    dataset: Dataset, config: Config, cv: dict[str, dict[str, CVResult]]
) -> dict[str, Any]:
    """``metrics.json``: per region n, positives, AUC with 95 % interval, baselines."""
    regions: dict[str, Any] = {}
    for region in dataset:
        main = region_result(cv[MODEL], region.name).regions[region.name].to_dict()
        main["n_dropped"] = len(region.dropped)
        main["baselines"] = {
            name: _auc_entry(region_result(cv[name], region.name).regions[region.name].to_dict())
            for name in config.model.baselines
        }
        regions[region.name] = main
    overall = {}
    for key, result in cv[MODEL].items():
        overall[key] = result.metrics()["overall"]
    return {
        "metal": config.metal,
        "rule": dataset.rule,
        "scope": config.train.scope,
        "cv": config.train.cv,
        "optimistic": config.train.cv == "random",
        "seed": config.train.seed,
        "patch_px": dataset.patch_px,
        "patch_m": config.patch.size_m,
        "bands": list(dataset.band_names),
        "regions": regions,
        "overall": overall,
    }


def _auc_entry(entry: dict[str, Any]) -> dict[str, Any]:
    keep = ("auc", "auc_ci95", "auc_null_reason")
    return {k: entry[k] for k in keep if k in entry}


def write_predictions(path: Path, dataset: Dataset, cv: dict[str, dict[str, CVResult]]) -> None:
    """``predictions.csv``: out-of-fold probability and fold of every sample.

    SPEC columns first (``prob`` is SI-LICNet's), then ``prob_<baseline>`` columns.
    """
    frames = []
    for region in dataset:
        frame = region.table[["sample_id", "region", "x", "y", "value", "label"]].copy()
        frame["prob"], frame["fold"] = oof(cv[MODEL], region, dataset)
        for name in cv:
            if name != MODEL:
                frame[f"prob_{name}"] = oof(cv[name], region, dataset)[0]
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    write_text_atomic(path, table.to_csv(index=False, float_format="%.6g"))


def write_roc_figures(folder: Path, dataset: Dataset, cv: dict[str, dict[str, CVResult]]) -> None:
    """``figures/roc_REGION.png``: SI-LICNet and the baselines on one plot per region."""
    for region in dataset:
        probabilities = {name: oof(cv[name], region, dataset)[0] for name in cv}
        aucs = {name: region_result(cv[name], region.name).regions[region.name].auc for name in cv}
        result = region_result(cv[MODEL], region.name)
        note = f"{result.cv} CV, {result.folds} folds" + (
            f", blocks of {result.block_m:g} m" if result.block_m else " (optimistic)"
        )
        roc_figure(
            folder / f"roc_{safe_stem(region.name)}.png",
            region.name,
            region.labels,
            probabilities,
            aucs,
            note=note,
        )


def save_models(
    folder: Path, dataset: Dataset, config: Config, cv: dict[str, dict[str, CVResult]]
) -> None:
    """The final models (trained on all samples of a scope), as files that load safely."""
    for name, scopes in cv.items():
        for key, result in scopes.items():
            if result.final is None:
                continue
            estimator = result.final
            metadata: dict[str, Any] = {
                "scope": key,
                "patch_px": dataset.patch_px,
                "patch_m": config.patch.size_m,
                "rule": dataset.rule,
                "metal": config.metal,
                "band_names": list(dataset.band_names),
            }
            if isinstance(estimator, Standardized):
                metadata["band_stats"] = estimator.stats_.to_dict()
                model = estimator.inner
                suffix = ".pt"
            else:
                model, suffix = estimator, ".npz"
            save_model(folder / safe_stem(key) / f"{name}{suffix}", model, metadata=metadata)


def _results_yaml(config: Config) -> str:
    """The configuration that decides a run's results: where it computes does not.

    The Dask scheduler is left out, so a run killed on one cluster (or locally) can be
    resumed on another; the results are identical either way (``tests/test_compute.py``).
    """
    where = config.model_copy(deep=True)
    where.compute.scheduler = None
    return where.to_yaml()


def _write_config(path: Path, config: Config) -> None:
    text = "# Resolved configuration of this run (paths absolute, defaults filled in).\n"
    write_text_atomic(path, text + config.to_yaml())


@contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall time of a step in ``seconds[name]`` (for ``run.json``)."""
    start = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - start, 2)


__all__ = ["MODEL", "RunResult", "evaluate", "execute", "run"]
