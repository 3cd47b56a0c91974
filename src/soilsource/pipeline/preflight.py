"""The preflight: one validation of every input, shared by ``check``, ``run`` and ``predict``.

:func:`plan` reads and checks, in this order and before anything is trained or written:

- the run directory (``--out``, ``--force``, ``--resume``): :func:`soilsource.rundir.check_out`,
  a run in progress there included (its lock), and, with ``--resume``, that the killed
  run's checkpoints are of this configuration
  (:meth:`soilsource.pipeline.resume.Checkpoints.verify`);
- the Dask scheduler of ``compute.scheduler``, when one is set;
- the imagery: every raster opens, has a CRS and a north-up grid, the rasters agree in
  bands (count, names, scales, offsets) and in patch size in pixels, the patch fits in
  each raster and its working set in memory, and a raster that declares no nodata is a
  warning;
- land use and its class table (a code missing from the table is found here, before any
  training), the rasters of ``mapping`` (pH, study area) and the reference layers of
  ``report``, all before the patches are read;
- the samples, the label rule and the patches (:func:`soilsource.data.dataset.load_dataset`,
  which reads each sample's patch once, with the working-set memory check of
  :func:`soilsource.data.dataset.check_memory`): a region with no sample in the imagery, or
  none with enough data in its patch, is refused; the returned
  :class:`~soilsource.data.dataset.Dataset` is what ``run`` trains on, so patches are not read
  twice;
- labels: a region of one class is a warning (its AUC cannot be computed; the models
  still learn), a scope with fewer usable samples than ``train.folds`` is refused, and
  the study area must cover each region for kNNDM;
- disk: an estimate of the run's outputs (:func:`output_bytes`) against the free space.

Problems that make a run impossible raise :class:`~soilsource.errors.InputError` (one
line, exit 2); problems that only weaken it become :attr:`RunPlan.warnings`, which the
caller prints once the whole preflight has passed, so a refused run prints one line.

``check`` prints the plan (:mod:`soilsource.pipeline.check`); ``run`` trains on it
(:func:`soilsource.pipeline.run`); ``predict`` has its own inputs, a run directory and new
imagery, checked by :func:`predict_plan`.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import MaskFlags

from soilsource.config import Config, load_config
from soilsource.data.context import check_context_space, imagery_without_context
from soilsource.data.dataset import (
    Dataset,
    check_memory,
    load_dataset,
    prediction_area,
)
from soilsource.data.patches import one_patch_size, patch_size_px
from soilsource.errors import InputError, size_text
from soilsource.inputs import (
    RasterInfo,
    describe_crs,
    describe_raster,
    open_landuse,
    open_raster,
    read_samples,
    resolve_imagery,
)
from soilsource.inputs.imagery import check_like_training, scaling_mismatch
from soilsource.inputs.reference import read_reference
from soilsource.learn.training import TrainSettings
from soilsource.models.modelio import SavedModel, load_model, read_header
from soilsource.models.registry import METHOD, REGISTRY
from soilsource.pipeline.resume import Checkpoints, results_yaml
from soilsource.report.document import read_run_config
from soilsource.rundir import check_out, is_complete, read_status
from soilsource.runtime import check_scheduler
from soilsource.sources import validate
from soilsource.sources.join import detection_limits, metal_table

FREE_DISK_ENV = "SOILSOURCE_FREE_DISK"
"""Bytes of free disk to assume instead of asking the file system (tests simulate a full
disk with it)."""

MAP_BYTES_PER_PX = 24
"""Output bytes per imagery pixel of a region: its probability, concentration,
applicability and sensitivity maps, float32 each (16 B), as Cloud-Optimised GeoTIFFs whose
overviews add a third (21.3 B), rounded up; compression only makes them smaller."""
SAMPLE_BYTES = 8192
"""Output bytes per sample: its rows in predictions.csv, its features in the kept area of
applicability (``silicnet.aoa-REGION.npz``, 0.7 KiB in the demo), the candidate and land-use
tables, and its share of the random forest's nodes (about 4 KiB a sample in the quick
demo, written twice: the model and its checkpoint)."""
FIXED_BYTES = 8 * 2**20
"""Output bytes of any run: ROC figures, the report and its assets (about 1 MiB in the
demo), run.json, config.yaml."""


@dataclass
class RegionCheck:
    """What one region brings: samples, positives, and how many are usable."""

    name: str
    n: int
    n_pos: int
    n_outside: int
    n_nodata: int
    patch_px: list[int]
    rasters: list[str]

    @property
    def n_usable(self) -> int:
        """Samples inside the imagery whose patch has enough data."""
        return self.n - self.n_outside - self.n_nodata


@dataclass
class InputCheck:
    """One input file: its role, path, CRS and a short description."""

    role: str
    path: str
    crs: str
    detail: str


@dataclass
class RunPlan:
    """What the preflight found: the dataset ``run`` trains on, and what ``check`` prints.

    Attributes
    ----------
    config:
        The configuration (loaded).
    dataset:
        Samples, labels and patches of every region, read once.
    inputs:
        Every input file with its CRS and a short description.
    regions:
        Per region: samples, positives, left out (outside the imagery, nodata).
    warnings:
        What weakens the run without making it impossible (print them when it starts).
    out:
        The run directory, when there is one (``run``), else None (``check``).
    output_bytes:
        Estimate of what the run writes (:func:`output_bytes`).
    seconds:
        Wall time of the preflight (``run.json`` reports it as the inputs step).
    """

    config: Config
    dataset: Dataset
    inputs: list[InputCheck]
    regions: list[RegionCheck]
    warnings: list[str] = field(default_factory=list)
    out: Path | None = None
    output_bytes: int = 0
    seconds: float = 0.0


def plan(
    config: Config | str | PathLike[str],
    out: str | PathLike[str] | None = None,
    *,
    force: bool = False,
    resume: bool = False,
    settings: TrainSettings | None = None,
    keep_patches: bool = True,
    threads: int = 2,
) -> RunPlan:
    """Validate every input of ``config`` (and the run directory ``out``), writing nothing.

    Parameters
    ----------
    config:
        A :class:`~soilsource.config.Config` or the path of a YAML configuration.
    out:
        The run directory of ``run`` (None for ``check``).
    force, resume:
        As ``run --force`` / ``run --resume``: what ``out`` may hold.
    settings:
        The run's training settings, part of the checkpoints a resumed run must match.
    keep_patches:
        Keep patches in memory (within ``compute.patch_cache_mb``) for training; ``check``
        reads them for their nodata share only.
    threads:
        Reader threads for the patches.

    Raises
    ------
    InputError
        Anything that makes the run impossible (see the module docstring): one line
        naming the file and the key, column, rows or region.
    """
    start = time.perf_counter()
    if not isinstance(config, Config):
        config = load_config(config)
    source = str(config.source or "config")
    if out is not None:
        out = check_out(out, force=force, resume=resume)
        if resume:
            Checkpoints(out, settings).verify(results_yaml(config))
    if config.compute.scheduler is not None:
        check_scheduler(config.compute.scheduler)  # a wrong address fails now
    warnings: list[str] = []
    samples = read_samples(config.samples)
    names = sorted(samples["region"].unique().tolist())
    imagery = resolve_imagery(config.imagery, names)
    rasters = _distinct(imagery)
    _check_imagery(rasters, config, warnings)
    check_context_space(rasters, config.patch.context_m)
    _check_duplicate_points(samples, warnings)
    inputs = [
        InputCheck(
            "samples", str(config.samples.path), describe_crs(samples.crs), f"{len(samples)} rows"
        )
    ]
    inputs += [_describe_imagery(r) for r in rasters]
    if config.landuse is not None:  # before the patches: the cheap checks first
        inputs += _check_landuse(config, names)
    inputs += mapping_inputs(config)
    dataset = load_dataset(config, threads=threads, warnings=warnings, cache=keep_patches)
    regions = [_region_check(r, len(samples[samples["region"] == r.name])) for r in dataset]
    _check_labels(dataset, regions, config, source, warnings)
    if config.mapping.area is not None and config.train.cv == "knndm":
        for region in dataset:  # kNNDM matches the study area on each region
            prediction_area(region, config.mapping.area)
    result = RunPlan(config, dataset, inputs, regions, warnings)
    if out is not None:
        result.out = out
        result.output_bytes = output_bytes(dataset, config)
        _check_disk(out, result.output_bytes)
    result.seconds = round(time.perf_counter() - start, 2)
    return result


def plan_several(
    config: Config,
    out: str | PathLike[str] | None = None,
    *,
    force: bool = False,
    resume: bool = False,
    threads: int = 2,
) -> list[RunPlan]:
    """The preflight of a several-metal run: :func:`plan` of every metal's single-metal
    configuration, and with ``sources:`` every check of the factorisation
    (:func:`soilsource.sources.validate`), before anything is trained or written.

    ``out`` is checked as :func:`plan` checks it; each metal's own run directory is
    checked when its run starts (a resumed several-metal run keeps the complete ones).
    Returns one plan per metal, in the order of ``metal``.
    """
    if out is not None:
        check_out(out, force=force, resume=resume)
    plans = [
        plan(config.for_metal(metal), keep_patches=False, threads=threads)
        for metal in config.metals
    ]
    if config.sources is not None:
        _, values = metal_table(config)
        validate(
            values,
            detection_limits(config, values),
            config.sources.error_fraction,
            config.sources.factors,
            source=str(config.samples.path),
            config_file=str(config.source or "config"),
        )
    return plans


def mapping_inputs(config: Config) -> list[InputCheck]:
    """Validate the rasters of ``mapping`` (study area, pH) and the reference layers of
    ``report``.

    Raises
    ------
    InputError
        A missing or unreadable raster, or ``mapping.ph`` under a rule that has no pH; a
        missing or unreadable ``report.reference`` file.
    """
    found = []
    if config.mapping.ph is not None:  # read by the maps of a gb15618 run
        if config.label.rule != "gb15618":
            raise InputError(
                config.source or "config",
                "key 'mapping.ph'",
                f"a pH raster is used by rule gb15618 only, not by rule {config.label.rule}",
            )
        ph = describe_raster(config.mapping.ph, "mapping.ph")
        found.append(InputCheck("pH", str(ph.path), ph.describe_crs(), "(mapping.ph)"))
    if config.mapping.area is not None:  # the study area kNNDM matches
        area = describe_raster(config.mapping.area, "mapping.area")
        size = f"{area.width} x {area.height} px (mapping.area)"
        found.append(InputCheck("study area", str(area.path), area.describe_crs(), size))
    for path in config.report.reference:  # outlines drawn on the report's maps
        layer = read_reference(path)
        detail = f"{len(layer)} feature{'s' if len(layer) != 1 else ''} (report.reference)"
        found.append(InputCheck("reference", str(path), describe_crs(layer.crs), detail))
    return found


def output_bytes(dataset: Dataset, config: Config) -> int:
    """Estimate of the bytes a run of ``dataset`` writes (meant as an upper bound).

    :data:`MAP_BYTES_PER_PX` per pixel of every raster a region reads (maps are
    wall-to-wall), :data:`SAMPLE_BYTES` per sample, each network's ``saved_bytes`` (model
    registry) twice per scope (model and checkpoint), and :data:`FIXED_BYTES`. Measured:
    the quick demo (six 256 x 256 px regions, 3 folds, one member, the forest) writes
    3.8 MB besides its city; this estimate says about 25 MB.
    """
    pixels = sum(r.width * r.height for region in dataset for r in region.rasters)
    samples = sum(len(region) + len(region.dropped) for region in dataset)
    scopes = 1 if config.train.scope == "pooled" else len(dataset.regions)
    networks = config.model.members * REGISTRY[METHOD].saved_bytes + sum(
        REGISTRY[name].saved_bytes for name in config.model.baselines
    )
    return pixels * MAP_BYTES_PER_PX + samples * SAMPLE_BYTES + 2 * scopes * networks + FIXED_BYTES


def free_disk(out: Path) -> int:
    """Bytes free where ``out`` is (or would be) written; ``SOILSOURCE_FREE_DISK`` overrides."""
    given = os.environ.get(FREE_DISK_ENV)
    if given:
        return int(given)
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def _check_disk(out: Path, need: int, what: str = "the run writes") -> None:
    free = free_disk(out)
    if need > free:
        raise InputError(
            "--out",
            str(out),
            f"{what} about {size_text(need)} of maps, models and tables, only "
            f"{size_text(free)} is free there; free some space or choose another directory",
        )


def _distinct(imagery: dict[str, list[RasterInfo]]) -> list[RasterInfo]:
    seen: dict[Path, RasterInfo] = {}
    for rasters in imagery.values():
        for raster in rasters:
            seen.setdefault(raster.path, raster)
    return list(seen.values())


def _check_imagery(rasters: list[RasterInfo], config: Config, warnings: list[str]) -> None:
    """Bands that mean the same in every raster, patches that fit, nodata declared.

    The count is checked by :func:`~soilsource.inputs.resolve_imagery`; names, scales and
    offsets here (:func:`~soilsource.inputs.imagery.scaling_mismatch`, as for new imagery):
    one model reads every raster's patches, so band 2 must be red in each of them.
    """
    first = rasters[0]
    for other in rasters[1:]:
        for i, (name, expected) in enumerate(zip(other.band_names, first.band_names, strict=True)):
            if name != expected:
                raise InputError(
                    other.path,
                    f"band {i + 1}",
                    f"is '{name}', but {first.path.name} has '{expected}' there: every imagery "
                    "raster needs the same bands in the same order",
                )
        differs = scaling_mismatch(other, first.scales, first.offsets)
        if differs is not None:
            i, what, a, b = differs
            raise InputError(
                other.path,
                f"band {i + 1} ('{first.band_names[i]}')",
                f"{what} {a:g}, but {first.path.name} has {what} {b:g}: every imagery "
                "raster needs the same scales and offsets",
            )
    sizes = {patch_size_px(config.patch.size_m, raster) for raster in rasters}
    one_patch_size(sizes, config.patch.size_m, config.source or "config")
    for raster in rasters:
        size = patch_size_px(config.patch.size_m, raster)
        check_memory(raster.count, size, config)  # before any patch is read
        if size > min(raster.width, raster.height):
            raise InputError(
                config.source or "config",
                "key 'patch.size_m'",
                f"{config.patch.size_m:g} m is {size} px on {raster.path.name}, larger than "
                f"the raster ({raster.width} x {raster.height} px); use a smaller patch.size_m",
            )
        if all(v is None for v in raster.nodata):
            with open_raster(raster.path) as src:
                masked = any(flags != [MaskFlags.all_valid] for flags in src.mask_flag_enums)
            if not masked:
                warnings.append(
                    f"{raster.path.name} declares no nodata value: every pixel, zeros "
                    "included, counts as data (set one with gdal_edit.py -a_nodata)"
                )


def _check_duplicate_points(samples, warnings: list[str]) -> None:
    """Samples at the same coordinates share a patch: allowed (field duplicates), said."""
    xy = np.column_stack([samples.geometry.x.to_numpy(), samples.geometry.y.to_numpy()])
    _, inverse, counts = np.unique(xy, axis=0, return_inverse=True, return_counts=True)
    shared = counts[inverse.ravel()] > 1
    if shared.any():
        rows = np.flatnonzero(shared) + 1
        shown = ", ".join(str(r) for r in rows[:10]) + (" ..." if len(rows) > 10 else "")
        warnings.append(
            f"{int(shared.sum())} samples share their coordinates with another (rows {shown}): "
            "they read the same patch (field duplicates or replicates?)"
        )


def _region_check(region, n: int) -> RegionCheck:
    dropped = region.dropped
    reasons = dropped["reason"] if len(dropped) else []
    n_pos = int(region.labels.sum()) + (int(dropped["label"].sum()) if len(dropped) else 0)
    return RegionCheck(
        name=region.name,
        n=n,
        n_pos=n_pos,
        n_outside=int(np.sum(np.asarray(reasons) == "outside imagery")),
        n_nodata=int(np.sum(np.asarray(reasons) == "nodata")),
        patch_px=[region.patch_px],
        rasters=[r.path.name for r in region.rasters],
    )


def _check_labels(
    dataset: Dataset,
    regions: list[RegionCheck],
    config: Config,
    source: str,
    warnings: list[str],
) -> None:
    """One class in a region: no AUC there (warned; the models still learn, as a metal
    below its limit everywhere in a several-metal run is reported, never dropped); fewer
    usable samples than folds in a scope: refused."""
    labels = np.concatenate([r.labels for r in dataset])
    folds = config.train.folds
    scopes = (
        [("all regions (train.scope pooled)", len(labels))]
        if config.train.scope == "pooled"
        else [(f"region '{r.name}'", len(r)) for r in dataset]
    )
    for what, n in scopes:
        if n < folds:
            raise InputError(
                source,
                "key 'train.folds'",
                f"{what} has {n} usable samples, fewer than the {folds} folds",
            )
    for region, check in zip(dataset, regions, strict=True):
        n_pos = int(region.labels.sum())
        n_neg = len(region) - n_pos
        if n_pos == 0 or n_neg == 0:
            kind = "negative" if n_pos == 0 else "positive"
            warnings.append(
                f"region '{check.name}': all {len(region)} usable samples are {kind} under "
                "the rule; its AUC cannot be computed"
            )
        elif min(n_pos, n_neg) < folds:
            warnings.append(
                f"region '{check.name}': only {min(n_pos, n_neg)} samples of the rarer class "
                f"for {folds} folds"
            )


def _describe_imagery(raster: RasterInfo) -> InputCheck:
    nodata = {v for v in raster.nodata if v is not None}
    detail = (
        f"{raster.width} x {raster.height} px, {raster.count} bands "
        f"({', '.join(raster.band_names)}), {raster.dtype}, "
        f"{raster.pixel_size_m:g} m pixels"
    )
    if nodata:
        detail += f", nodata {', '.join(f'{v:g}' for v in sorted(nodata))}"
    return InputCheck("imagery", str(raster.path), raster.describe_crs(), detail)


def _check_landuse(config: Config, regions: list[str]) -> list[InputCheck]:
    """Every region's land use opens, and its codes are all in the class table."""
    spec = config.landuse
    assert spec is not None
    out = []
    seen: set[Path] = set()
    for region in regions if spec.is_template else regions[:1]:
        landuse = open_landuse(spec, region)
        if landuse.path in seen:
            continue
        seen.add(landuse.path)
        names = ", ".join(f"{c} {n}" for c, n in sorted(landuse.classes.items()))
        detail = f"{landuse.kind}, {len(landuse.classes)} classes" + (
            f" ({names})" if names else ""
        )
        out.append(InputCheck("land use", str(landuse.path), landuse.crs, detail))
    return out


# --- predict ------------------------------------------------------------------------------


@dataclass
class PredictPlan:
    """What ``predict`` applies to what: the run's configuration and model, the new imagery."""

    config: Config
    model_path: Path
    region: str
    saved: SavedModel
    record: dict[str, Any]
    how: dict[str, Any]
    raster: RasterInfo
    out: Path


def predict_plan(
    run_dir: str | PathLike[str],
    imagery: str | PathLike[str],
    out: str | PathLike[str],
    *,
    model: str,
    region: str | None = None,
    force: bool = False,
) -> PredictPlan:
    """Validate ``predict``'s inputs, writing nothing: the run directory, its ``model``
    file for ``region``, the new imagery against the training imagery, and ``out``.

    Raises
    ------
    InputError
        Not a complete run, a model saved before its files recorded their imagery, an
        unknown region, imagery whose bands or pixel size differ from the training
        imagery (one line naming the band or property), or an ``out`` that ``run`` would
        refuse too.
    """
    run_dir, imagery = Path(run_dir), Path(imagery)
    if Path(out).resolve() in (run_dir.resolve(), *run_dir.resolve().parents):
        raise InputError("--out", str(out), "holds the run itself; choose another directory")
    config, model_path, region = _model_of(run_dir, region, model)
    saved = load_model(model_path)
    record, how = _records(saved, model_path, region)
    raster = describe_raster(imagery, "--imagery")
    check_like_training(raster, imagery_without_context(record))
    out = check_out(out, force=force)
    pixels = raster.width * raster.height
    _check_disk(out, pixels * MAP_BYTES_PER_PX + FIXED_BYTES, "predict writes")
    return PredictPlan(config, model_path, region, saved, record, how, raster, out)


def _model_of(run_dir: Path, region: str | None, model: str) -> tuple[Config, Path, str]:
    """The run's configuration, the model file that maps ``region``, and the region."""
    if not run_dir.is_dir():
        raise InputError(run_dir, "", "not found (RUN_DIR: a run directory of soilsource run)")
    if read_status(run_dir) is None:
        raise InputError(
            run_dir, "", "not a run directory (no run.json): give what run --out wrote"
        )
    if not is_complete(run_dir):
        raise InputError(
            run_dir, "run.json", "not a complete soilsource run; finish it with run --resume"
        )
    config = read_run_config(run_dir)
    covered: dict[str, Path] = {}
    for path in sorted((run_dir / "models").glob(f"*/{model}.pt")):
        metadata = read_header(path).get("metadata", {})
        regions = metadata.get("maps") or {metadata.get("scope"): None}  # older runs: the scope
        covered.update({name: path for name in regions})
    if not covered:
        raise InputError(run_dir, "models", f"no trained {model}.pt: nothing to predict with")
    if region is None:
        if len(covered) > 1:
            raise InputError(
                "--region", "", f"the run has several regions; choose one of {', '.join(covered)}"
            )
        region = next(iter(covered))
    if region not in covered:
        raise InputError(
            "--region", region, f"not a region of the run (regions: {', '.join(covered)})"
        )
    return config, covered[region], region


def _records(saved: SavedModel, path: Path, region: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's imagery record and how ``region``'s maps were made; a clear refusal without."""
    record = saved.metadata.get("imagery")
    how = (saved.metadata.get("maps") or {}).get(region)
    if record is None or how is None or "band_stats" not in saved.metadata:
        raise InputError(
            path,
            "header",
            "saved by a soilsource without predict: it does not record its training imagery "
            "(band scales and offsets, pixel size) or its maps' rule; run the configuration "
            "again with this version to predict with it",
        )
    return record, how
