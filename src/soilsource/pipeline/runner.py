"""``soilsource run``: the whole pipeline, from a configuration to a run directory.

inputs -> labels -> patches (:mod:`soilsource.data.dataset`) -> SI-LICNet and baselines under
spatial cross-validation (:mod:`soilsource.learn.evaluation`) -> out-of-fold predictions,
metrics and ROC curves -> occlusion sensitivity of the final models, mosaicked per region
(:mod:`soilsource.explain`) -> land-use statistics and hotspots (:mod:`soilsource.analysis.zones`,
:mod:`soilsource.analysis.hotspots`) -> probability maps (:mod:`soilsource.mapping.probability`).

Every output is written atomically and the run directory says whether it is complete
(:mod:`soilsource.rundir`).
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.pool import Pool
from os import PathLike
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import rasterio.windows
import torch
from scipy import sparse
from scipy.stats import spearmanr
from sklearn.exceptions import NotFittedError

from soilsource.analysis.hotspots import raster_hotspot_threshold, region_hotspots, write_hotspots
from soilsource.analysis.zones import (
    mark_drivers,
    region_landuse_statistics,
    write_geodetector,
    write_landuse_sensitivity,
)
from soilsource.atomic import write_text_atomic
from soilsource.config import Config, DeviceName, load_config
from soilsource.data.context import context_channels
from soilsource.data.dataset import (
    Dataset,
    RegionSamples,
    cache_budget,
    free_memory,
    prediction_area,
)
from soilsource.data.labels import gb15618_screening_value
from soilsource.data.patches import BandStats, Patches, PatchStore
from soilsource.explain import sensitivity
from soilsource.explain.candidates import (
    covered_window,
    exceedance_weights,
    object_effects,
    object_labels,
    region_candidates,
    sample_effects,
    write_candidates,
)
from soilsource.explain.mosaic import write_sensitivity
from soilsource.explain.subset import explained_rows
from soilsource.inputs import open_landuse
from soilsource.inputs.imagery import (
    crs_code,
    imagery_record,
    reproject_points,
)
from soilsource.learn.evaluation import (
    N_BOOTSTRAP,
    AUCResult,
    CVResult,
    brier_score,
    cross_validate,
    paired_auc_difference,
)
from soilsource.learn.training import (
    Standardized,
    TrainSettings,
    available_cpus,
    derive_seed,
    resolve_device,
    share_cpus,
)
from soilsource.mapping.applicability import Applicability, pooled_features, write_applicability
from soilsource.mapping.probability import MapRule, write_probability_map
from soilsource.models import SILICNet
from soilsource.models.modelio import save_estimator
from soilsource.models.pretrain import PretrainSettings, load_trunk, pretrained_trunk
from soilsource.models.registry import METHOD, estimator
from soilsource.pipeline.preflight import RunPlan, plan_several
from soilsource.pipeline.preflight import plan as preflight
from soilsource.pipeline.resume import Checkpoints
from soilsource.pipeline.resume import results_yaml as _results_yaml
from soilsource.progress import info, warn
from soilsource.report.document import write_report
from soilsource.report.figures import roc_figure
from soilsource.rundir import claim, is_complete, mark, prepare, read_status, safe_stem
from soilsource.rundir import resume as resume_run
from soilsource.runtime import Session, compute_session
from soilsource.sources import Apportionment, apportion
from soilsource.sources.join import (
    detection_limits,
    factor_config,
    factor_label,
    factor_loads,
    metal_table,
    write_factor_samples,
)

MODEL = METHOD
"""Name of the method's own network in metrics, predictions and model files."""

TASK_MODULES = (sensitivity.__name__, write_probability_map.__module__)
"""Modules of the tasks a Dask session runs (occlusion batches, map tiles): its workers import
them when the session starts."""

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
    device: DeviceName | None = None,
    settings: TrainSettings | None = None,
    resume: bool = False,
) -> RunResult | SeveralResult:
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
        region rasters are kept (:mod:`soilsource.pipeline.resume`); the configuration must be
        the killed run's.

    Raises
    ------
    InputError
        Bad inputs or configuration, or a run in progress in ``out``: found by the
        preflight (:func:`soilsource.pipeline.preflight.plan`) before anything is written.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    if config.several:
        return run_several(
            config, out, force=force, device=device, settings=settings, resume=resume
        )
    if device is not None:
        config.compute.device = device  # part of the checkpoints a resumed run must match
    settings = train_settings(config, settings)
    found = preflight(config, out, force=force, resume=resume, settings=settings)
    for message in found.warnings:
        warn(message)
    with claim(out):  # one run per directory, until this one ends
        out = resume_run(out, force=force) if resume else prepare(out, force=force)
        return execute(config, out, device=device, settings=settings, resume=resume, plan=found)


# --- several metals, and their source factors ---------------------------------------------


@dataclass
class SeveralResult:
    """What :func:`run_several` returns: the run directory, its metrics, each run's result.

    ``runs`` maps a metal (or ``sources/factor_K``) to its single-metal
    :class:`RunResult` (its metrics and step times; the models are in its folder), or to
    None when a resumed run found it complete already.
    """

    out: Path
    metrics: dict[str, Any]
    runs: dict[str, RunResult | None] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run_several(
    config: Config,
    out: str | PathLike[str],
    *,
    force: bool = False,
    device: DeviceName | None = None,
    settings: TrainSettings | None = None,
    resume: bool = False,
) -> SeveralResult:
    """Several metals: one complete single-metal run per metal under ``out/METAL/``.

    With a ``sources:`` section, the samples x metals table is also factorised
    (:mod:`soilsource.sources`, written to ``out/sources/``) and each factor's load is
    learned from the imagery as a metal is (``out/sources/factor_K/``,
    :mod:`soilsource.sources.join`). The top-level ``metrics.json`` and ``report.html``
    cover them all. Every metal's inputs are checked before anything is trained or
    written; ``resume`` keeps the runs that are complete and continues the rest.
    """
    plan_several(config, out, force=force, resume=resume)  # nothing is written before this
    with claim(out):  # one run per directory, until this one ends
        out = resume_run(out, force=force) if resume else prepare(out, force=force)
        return execute_several(config, out, device=device, settings=settings, resume=resume)


def execute_several(
    config: Config,
    out: Path,
    *,
    device: DeviceName | None = None,
    settings: TrainSettings | None = None,
    resume: bool = False,
) -> SeveralResult:
    """The several-metal pipeline proper, into a run directory made (and held) by
    :func:`run_several`, whose preflight has checked every metal's inputs."""
    singles = {metal: config.for_metal(metal) for metal in config.metals}
    samples, values = metal_table(config)
    _write_config(out / "config.yaml", config)
    seconds: dict[str, float] = {}
    result = SeveralResult(out, {}, seconds=seconds)
    apportionment = None
    if config.sources is not None:
        with _timed(seconds, "sources"):
            apportionment = apportion_sources(config, values, out / "sources")
    jobs = [(metal, single, "single-metal run") for metal, single in singles.items()]
    if apportionment is not None and config.sources is not None and config.sources.explain:
        jobs += [
            (key, factor_cfg, "learning the factor's load from the imagery")
            for key, factor_cfg in factor_runs(config, samples, apportionment, out / "sources")
        ]
    lanes = runs_at_once(config, len(jobs), device)
    cpus = max(1, available_cpus() // lanes)
    if lanes > 1:
        info(f"{len(jobs)} runs, {lanes} at once with {cpus} core{'s' * (cpus > 1)} each")
    with _lanes(lanes, cpus) as pool:
        pending = {}
        for key, sub_config, what in jobs:
            info(f"{key}: {what}, into {out / key}")
            args = (sub_config, out / key, device, settings, resume)
            if pool is None:  # one after the other, in this process
                seconds[key], result.runs[key] = _timed_sub_run(*args)
            else:
                pending[key] = pool.apply_async(_timed_sub_run, args)
        for key, done in pending.items():
            seconds[key], result.runs[key] = done.get()
    result.metrics = several_metrics(config, out)
    write_text_atomic(out / "metrics.json", json.dumps(result.metrics, indent=2) + "\n")
    with _timed(seconds, "report"):
        write_report(out, seconds=seconds)
    mark(out, "complete", seconds=seconds, several=True)
    return result


LANE_MEMORY_MB = 2048
"""Memory one run of a several-metal run may take beside its patch cache: a Python with
torch, scikit-learn and GDAL and a run's working set. A demo-size city's run peaks at
1.5 GB in its process, Meuse's at 1.4 GB (the largest resident set, ``bench_several`` and
``/usr/bin/time -v soilsource run examples/meuse/config_metals.yaml``)."""


def runs_at_once(config: Config, n_runs: int, device: DeviceName | None = None) -> int:
    """How many runs of a several-metal run compute at the same time.

    ``compute.runs_at_once`` when set; else as many as there are cores (each run gets its
    share), runs, and free memory for a process each (:data:`LANE_MEMORY_MB` plus the patch
    cache). One on a GPU (the runs would queue for it) and with a Dask scheduler (the
    cluster does the heavy work). On 2 cores a run alone uses them at about 1.1 on average
    (the report, figures and maps are single-threaded, and two torch threads on one small
    network wait on each other); two runs side by side with one core each took the demo's
    five runs from 289 s to 193 s (``bench_several`` in docs/benchmarks.md, quiet machine).
    More runs than cores did not pay: 3 at once took 187 s, all 5 at once 219 s
    (``compute.runs_at_once`` 3 and 5 on the same configuration, one core's share each).
    """
    if config.compute.runs_at_once is not None:
        return max(1, min(config.compute.runs_at_once, n_runs))
    on_cpu = resolve_device(device or config.compute.device).type == "cpu"
    if n_runs < 2 or config.compute.scheduler is not None or not on_cpu:
        return 1
    per_run = LANE_MEMORY_MB * 2**20 + cache_budget(config).left  # a run's patch cache
    return max(1, min(n_runs, available_cpus(), int(free_memory() // per_run)))


@contextmanager
def _lanes(lanes: int, cpus: int) -> Iterator[Pool | None]:
    """Processes for the runs of a several-metal run (None: run them in this process).

    Processes, not threads: each run seeds torch's global generator (initial weights,
    dropout) and sets its thread count, which threads of one process would share. They
    are spawned (not forked from a process whose OpenMP threads already ran), each with
    ``cpus`` cores (:func:`_lane_start`). However this process leaves the block (an error,
    Ctrl-C), the runs still going are stopped then, not left to finish: like a run in one
    process, an interrupted several-metal run ends at once and ``--resume`` continues it.
    """
    if lanes <= 1:
        yield None
        return
    # The processes start with Ctrl-C ignored (an ignored signal stays ignored across exec,
    # and Python then leaves it so): one pressed while they import would print a traceback.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        pool = multiprocessing.get_context("spawn").Pool(
            lanes, initializer=_lane_start, initargs=(cpus, os.getpid())
        )
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


def _lane_start(cpus: int, parent: int) -> None:
    """The start of a run's process: its share of the cores; Ctrl-C left to the parent,
    which stops every run (a KeyboardInterrupt in each would print a traceback each; see
    :func:`_lanes`); and on Linux the process dies with its parent, so that no run
    outlives the run directory's lock (taken by the parent) and writes beside a new run
    there."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    share_cpus(cpus)


PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process gets when its parent dies (Linux)."""


def _timed_sub_run(
    config: Config,
    out: Path,
    device: DeviceName | None,
    settings: TrainSettings | None,
    resume: bool,
) -> tuple[float, RunResult | None]:
    """:func:`_sub_run` and its wall time; the result without its cross-validation objects
    (models and fold results, which stay in the run's folder), so a process hands back
    only its metrics."""
    seconds: dict[str, float] = {}
    with _timed(seconds, "run"):
        result = _sub_run(config, out, device, settings, resume)
    if result is not None:
        result = RunResult(result.out, result.metrics, seconds=result.seconds)
    return seconds["run"], result


def _sub_run(
    config: Config,
    out: Path,
    device: DeviceName | None,
    settings: TrainSettings | None,
    resume: bool,
) -> RunResult | None:
    """One single-metal run inside a several-metal one (kept when resumed and complete)."""
    if resume and is_complete(out):
        return None
    unfinished = resume and read_status(out) is not None
    sub = resume_run(out) if unfinished else prepare(out, force=True)
    return execute(config, sub, device=device, settings=settings, resume=unfinished)


def apportion_sources(config: Config, values: pd.DataFrame, folder: Path) -> Apportionment:
    """Positive matrix factorisation of the samples x metals table, written to ``folder``."""
    assert config.sources is not None
    result = apportion(
        values,
        detection_limits(config, values),
        config.sources.error_fraction,
        config.sources.factors,
        config.train.seed,
        n_starts=config.sources.starts,
        n_bootstrap=config.sources.bootstrap,
        source=str(config.samples.path),
        config_file=str(config.source or "config"),
    )
    result.write(folder)
    return result


def factor_runs(
    config: Config, samples: pd.DataFrame, apportionment: Apportionment, folder: Path
) -> list[tuple[str, Config]]:
    """``(sources/factor_K, configuration)`` of each factor's imagery run."""
    profiles = apportionment.profiles
    loads = factor_loads(apportionment)
    crs, columns = write_factor_samples(samples, loads, folder / "samples.csv")
    runs = []
    for factor, column in zip(loads.columns, columns, strict=True):
        rows = profiles[profiles["factor"] == factor]
        main = str(rows.sort_values("share", ascending=False)["metal"].iloc[0])
        title = f"factor {int(factor)} ({factor_label(profiles, int(factor))}) load"
        runs.append(
            (
                f"sources/{column}",
                factor_config(config, folder / "samples.csv", crs, column, main, title),
            )
        )
    return runs


def several_metrics(config: Config, out: Path) -> dict[str, Any]:
    """The top-level ``metrics.json`` of a several-metal run, from the runs under ``out``.

    Per run (metal or factor): its folder, rule, and per region n, positives, AUC with
    interval (or the reason it has none, e.g. one class only), and skill; the
    ``sources`` summary with each factor's metals and shares.
    """
    runs: dict[str, Any] = {}
    keys = list(config.metals)
    if (out / "sources").is_dir():
        keys += sorted(f"sources/{p.name}" for p in (out / "sources").iterdir() if p.is_dir())
    for key in keys:
        metrics = json.loads((out / key / "metrics.json").read_text(encoding="utf-8"))
        runs[key] = {
            "path": key,
            "rule": metrics["rule"],
            "title": metrics.get("title", metrics["metal"]),
            "regions": {
                name: {
                    k: entry.get(k)
                    for k in ("n", "n_pos", "auc", "auc_ci95", "auc_null_reason", "skill")
                    if k in entry
                }
                for name, entry in metrics["regions"].items()
            },
        }
    record: dict[str, Any] = {
        "metals": config.metals,
        "several": True,
        "target": config.model.target,
        "seed": config.train.seed,
        "runs": runs,
    }
    summary = out / "sources" / "summary.json"
    if summary.is_file():
        record["sources"] = json.loads(summary.read_text(encoding="utf-8"))
    return record


def execute(
    config: Config,
    out: Path,
    *,
    device: DeviceName | None = None,
    settings: TrainSettings | None = None,
    resume: bool = False,
    plan: RunPlan | None = None,
) -> RunResult:
    """The pipeline proper, into a run directory made by :func:`~soilsource.rundir.prepare`.

    With ``resume``, into one checked by :func:`~soilsource.rundir.resume`: the
    checkpoints must be of the same configuration. A complete run deletes them.
    ``plan`` is the preflight's (:func:`soilsource.pipeline.preflight.plan`); without it the
    preflight runs here, before any training.
    """
    if device is not None:
        config.compute.device = device
    settings = train_settings(config, settings)
    if plan is None:  # the scheduler, the inputs and the patches, before any training
        plan = preflight(config)
        for message in plan.warnings:
            warn(message)
    dataset = plan.dataset
    checkpoints = Checkpoints(out, settings, config.compute.device)
    (checkpoints.resume if resume else checkpoints.start)(_results_yaml(config))
    seconds: dict[str, float] = {"inputs": plan.seconds}
    _write_config(out / "config.yaml", config)
    with _timed(seconds, "training"):
        cv = evaluate(dataset, config, settings=settings, checkpoints=checkpoints)
    metrics = build_metrics(dataset, config, cv)
    with _timed(seconds, "outputs"):
        write_predictions(out / "predictions.csv", dataset, cv)
        write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        write_roc_figures(out / "figures", dataset, cv)
        save_models(out / "models", dataset, config, cv)
    for region in dataset:  # trained: what follows reads few patches; stream them
        region.patches.drop_cache()
    # Occlusion batches and map tiles run here, or on the Dask cluster of compute.scheduler.
    with compute_session(config.compute.scheduler, preload=TASK_MODULES) as session:
        with _timed(seconds, "explanation"):
            explain(out, dataset, config, cv[MODEL], session=session, checkpoints=checkpoints)
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
    keys = ("max_epochs", "patience", "min_steps")
    given = {k: getattr(config.train, k) for k in keys if getattr(config.train, k) is not None}
    return TrainSettings(**given, augment=config.train.augment == "dihedral")


def model_factory(
    name: str,
    dataset: Dataset,
    config: Config,
    settings: TrainSettings | None,
    trunk: dict[str, torch.Tensor] | None = None,
) -> Callable[[], Any]:
    """A zero-argument factory of a fresh, untrained estimator for ``name``
    (:func:`~soilsource.models.registry.estimator`, with the configured SI-LICNet).

    Every model learns ``model.target`` (the concentration, or the label). ``settings``: the
    torch models' training; None = the configuration's (:func:`train_settings`: its
    ``train.min_steps``, ``max_epochs``, ``patience`` and ``augment``), so that
    :func:`evaluate` called without settings trains as ``soilsource run`` does. ``trunk``: a
    pretrained SI-LICNet trunk (:mod:`soilsource.models.pretrain`) every network starts from.
    """
    channels, size = len(dataset.band_names), dataset.patch_px
    device, target = config.compute.device, config.model.target
    settings = train_settings(config, settings)
    build = None
    if name == MODEL:
        silicnet = silicnet_builder(dataset, config)
        build = silicnet if trunk is None else lambda: load_trunk(silicnet(), trunk)
    return lambda: estimator(
        name, channels, size, target=target, settings=settings, device=device, build=build
    )


def silicnet_builder(dataset: Dataset, config: Config) -> Callable[[], SILICNet]:
    """A factory of the configured, untrained SI-LICNet for ``dataset``'s patches."""
    channels, size = len(dataset.band_names), dataset.patch_px
    members, sectors = config.model.members, config.model.sectors
    return lambda: SILICNet(channels, patch_px=size, members=members, n_sectors=sectors)


def pretrained_trunks(
    dataset: Dataset,
    config: Config,
    device: DeviceName | None = None,
    settings: PretrainSettings | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Per scope key, SI-LICNet's trunk pretrained on the scope's imagery (``model.pretrain``).

    Empty when pretraining is off. The trunk of a region comes from its own rasters, a
    pooled scope's from all of them; each is cached by an imagery fingerprint.
    ``settings``: the pretraining's (default :class:`~soilsource.models.pretrain.PretrainSettings`
    with the configuration's augmentation).
    """
    if not config.model.pretrain:
        return {}
    build = silicnet_builder(dataset, config)
    settings = settings or PretrainSettings(
        steps=config.model.pretrain_steps, augment=config.train.augment == "dihedral"
    )
    keys = ["pooled"] if config.train.scope == "pooled" else [r.name for r in dataset]
    trunks = {}
    for key in keys:
        rasters = [r for region in _scope_regions(dataset, key) for r in region.rasters]
        unique = list({str(r.path): r for r in rasters}.values())
        trunks[key] = pretrained_trunk(
            unique,
            build,
            settings,
            seed=config.train.seed,
            device=device or config.compute.device,
            log=lambda text, key=key: info(f"{key}: {text}"),
        )
    return trunks


def evaluate(
    dataset: Dataset,
    config: Config,
    *,
    settings: TrainSettings | None = None,
    checkpoints: Checkpoints | None = None,
    models: list[str] | None = None,
    final: bool = True,
    n_boot: int = N_BOOTSTRAP,
    device: DeviceName | None = None,
) -> dict[str, dict[str, CVResult]]:
    """Cross-validate SI-LICNet and every configured baseline on the same folds.

    Returns ``{model: {scope_key: CVResult}}`` where the scope key is the region name
    (scope ``region``) or ``"pooled"``. The folds depend only on the samples, labels
    and seed, so every model sees the same folds. Finished folds are kept in, and
    taken from, ``checkpoints``. ``models`` (default SI-LICNet and the configured
    baselines), ``final`` (train the final models) and ``n_boot`` (bootstrap resamples
    of the AUC interval) let benchmarks run the same evaluation for less.
    ``settings``: the torch models' training; None = the configuration's
    (:func:`train_settings`), as ``soilsource run`` trains.
    """
    models = models or [MODEL, *config.model.baselines]
    scopes = list(_scopes(dataset, config))  # prediction areas read once for every model
    trunks = pretrained_trunks(dataset, config, device) if MODEL in models else {}
    results: dict[str, dict[str, CVResult]] = {}
    for name in models:
        results[name] = {}
        for key, patches, table, area in scopes:
            trunk = trunks.get(key) if name == MODEL else None
            results[name][key] = cross_validate(
                model_factory(name, dataset, config, settings, trunk),
                patches.physical(),
                table["label"].to_numpy(),
                table[["x", "y"]].to_numpy(),
                table["region"].to_numpy(),
                folds=config.train.folds,
                cv=config.train.cv,
                block_m=block_m(config, table),
                buffer_m=config.train.buffer_m,
                patch_m=config.patch.size_m,
                prediction_xy=area,
                target=config.model.target,
                values=table["value"].to_numpy(),
                limits=table["limit"].to_numpy(),
                seed=config.train.seed,
                device=device or config.compute.device,
                settings=settings,
                final=final,
                n_boot=n_boot,
                description=f"{key}: {name}",
                checkpoint=checkpoints.folds(name, key) if checkpoints else None,
            )
    return results


def _scopes(dataset: Dataset, config: Config):
    """(scope key, patches, table, prediction points) of each scope of training."""
    knndm = config.train.cv == "knndm"
    areas = {r.name: prediction_area(r, config.mapping.area) if knndm else None for r in dataset}
    if config.train.scope == "pooled":
        patches, table = dataset.concat()
        area = np.concatenate(list(areas.values())) if knndm else None
        yield "pooled", patches, table, area
        return
    for region in dataset:
        yield region.name, region.patches, region.table, areas[region.name]


def block_m(config: Config, table: pd.DataFrame) -> float:
    """Spatial CV block side: the configured one, or the default from the samples' extent."""
    extent = min(np.ptp(table["x"].to_numpy()), np.ptp(table["y"].to_numpy()))
    return config.train.default_block_m(config.patch.size_m, float(extent))


def scope_key(cv: dict[str, CVResult], region: str) -> str:
    """The scope whose model covers ``region``: its own, or ``pooled``."""
    return region if region in cv else "pooled"


def region_result(cv: dict[str, CVResult], region: str) -> CVResult:
    """The cross-validation that covers ``region`` (its own, or the pooled one)."""
    return cv[scope_key(cv, region)]


def oof(
    cv: dict[str, CVResult], region: RegionSamples, dataset: Dataset
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities and fold ids of ``region``'s samples, in table order."""
    result = region_result(cv, region.name)
    sel = _region_rows(cv, region, dataset)
    return result.proba[sel], result.fold[sel]


def oof_values(
    cv: dict[str, CVResult], region: RegionSamples, dataset: Dataset
) -> np.ndarray | None:
    """Out-of-fold predicted median concentrations of ``region`` (None for label models)."""
    result = region_result(cv, region.name)
    if result.pred_value is None:
        return None
    return result.pred_value[_region_rows(cv, region, dataset)]


def _region_rows(cv: dict[str, CVResult], region: RegionSamples, dataset: Dataset) -> slice:
    """Where ``region``'s samples sit in the arrays of the CV that covers it.

    All of them for its own CV; in a pooled CV, the regions follow each other in
    dataset order (:meth:`~soilsource.data.dataset.Dataset.concat`).
    """
    if region.name in cv:
        return slice(None)
    start = 0
    for other in dataset:
        if other.name == region.name:
            break
        start += len(other)
    return slice(start, start + len(region))


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
    patches: Patches | PatchStore,
    config: Config,
    pixel_m: float,
    batch: int = 16,
    *,
    session: Session | None = None,
    clean: np.ndarray | None = None,
) -> np.ndarray:
    """Occlusion sensitivity (N, H, W) of every patch under the final SI-LICNet.

    Window and stride are set in metres (``explain.window_m``, ``explain.stride_m``) and
    rounded to whole pixels of the imagery; the baseline is ``explain.baseline`` in
    standardised units (0 = the band mean of the training samples); the context bands keep
    their values unless ``explain.occlude_context``. What a drop measures
    (:func:`attribution_output`): for a model of the concentration, its predicted
    standardised log concentration; for a model of the label, its probability. The work
    is :func:`soilsource.explain.sensitivity.sensitivity_maps`, in batches on ``session``.
    """
    window_px, stride_px = sensitivity.occlusion_px(
        config.explain.window_m, config.explain.stride_m, pixel_m
    )
    network, stats = _network(model)
    held = () if config.explain.occlude_context else context_channels(patches.band_names)
    return sensitivity.sensitivity_maps(
        network,
        stats,
        patches,
        window_px,
        stride_px,
        config.explain.baseline,
        batch=batch,
        session=session,
        output=attribution_output(model),
        held=held,
        background=occlusion_background(patches, stats, config, clean),
    )


TYPICAL_PATCHES = 256
"""Sample patches (at most) whose pixels the typical pixels are found among."""
MIN_CLEAN = 10
"""Clean samples (below their limit) needed for ``occlude_with: clean``; fewer: all."""


def occlusion_background(
    patches: Patches | PatchStore,
    stats: BandStats,
    config: Config,
    clean: np.ndarray | None = None,
) -> sensitivity.Background:
    """The pixels an occluding window takes in turn (``explain.occlude_with``): none for
    ``mean``; for ``typical``, the typical pixels among ``patches``' own: the explained
    samples of one raster of a region (a region over several rasters gets them per raster);
    for ``clean``, among those of them that ``clean`` marks (samples below their own limit),
    or all when fewer than :data:`MIN_CLEAN` are.

    Why clean (session 10): the question is what made the contaminated samples
    contaminated, so a place is compared with what land looks like where the soil is clean.
    An emitting land type that is common is among the region's typical pixels and could
    hardly be hidden by them; it is rarer around clean samples. Measured
    (``bench_explain``, ``bench_planted``): synthetic source AUC 0.784 -> 0.820, land-use
    Spearman 0.763 -> 0.783, the planted and Meuse rankings as with ``typical``."""
    if config.explain.occlude_with == "mean":
        return ()
    rng = np.random.default_rng(config.train.seed)
    pool = np.arange(len(patches))
    if config.explain.occlude_with == "clean" and clean is not None:
        marked = np.asarray(clean, bool)
        pool = pool[marked] if int(marked.sum()) >= MIN_CLEAN else pool
    n = len(pool)
    rows = np.sort(pool[rng.choice(n, min(n, TYPICAL_PATCHES), replace=False)])
    part = patches.subset(rows).read()  # the pixels once, for both uses below
    return sensitivity.typical_pixels(
        stats.transform(part), part.valid, config.explain.typical_k, seed=config.train.seed
    )


def _network(model: Standardized) -> tuple[SILICNet, BandStats]:
    """The network of a region's fitted SI-LICNet model (:data:`MODEL`, what maps and
    occlusion take) and its band statistics."""
    network = getattr(model.inner, "module", None)
    if not isinstance(network, torch.nn.Module) or model.stats_ is None:
        raise NotFittedError("the region's model has no fitted network")
    return cast(SILICNet, network), model.stats_


def attribution_output(model: Standardized) -> Literal["raw", "probability"]:
    """``"raw"`` (the predicted log concentration) for a model of the concentration, else
    ``"probability"``: what occlusion drops are measured in (docs/method.md, issue 13)."""
    return "raw" if getattr(model.inner, "link_", None) is not None else "probability"


def sample_weights(region: RegionSamples, rows: np.ndarray) -> np.ndarray:
    """How much each sample's map counts in the region's evidence: its measured exceedance
    of its own limit in log units (:func:`soilsource.explain.candidates.exceedance_weights`)."""
    table = region.table.iloc[rows]
    return exceedance_weights(table["value"].to_numpy(float), table["limit"].to_numpy(float))


def explain(
    out: Path,
    dataset: Dataset,
    config: Config,
    cv: dict[str, CVResult],
    *,
    session: Session | None = None,
    checkpoints: Checkpoints | None = None,
) -> None:
    """Sensitivity rasters, land-use statistics, hotspots and candidate sources per region.

    A region whose model has no skill (:func:`skill_verdict`) still gets its sensitivity
    raster and land-use statistics (so a reader can see what was not trusted) but no
    hotspots, no candidates and no driving land use. A sensitivity raster that exists is
    kept (a resumed run's); with ``checkpoints``, each raster's per-sample object effects
    are kept there before it is written, so its candidates need no second occlusion.
    """
    zones, hotspots, candidates = [], [], []
    for region in dataset:
        model = final_model(cv, region.name)
        if model is None:
            warn(f"region '{region.name}': no trained model, so no sensitivity map")
            continue
        skill, _ = skill_verdict(region_result(cv, region.name).regions[region.name])
        landuse = open_landuse(config.landuse, region.name) if config.landuse else None
        classes = landuse.classes if landuse else None
        raster_of = region.table["raster"].to_numpy()
        explained = explanation_rows(cv, region, dataset, config)
        for k, raster in enumerate(region.rasters):
            members = explained[raster_of[explained] == k]
            if len(members) == 0:
                continue
            drivers: list[str] = []
            name = output_name(region, k)
            path = out / "sensitivity" / f"{name}.tif"
            patches = region.patches.subset(members)
            clean = region.labels[members] == 0  # below their own limit
            grid = effects = None
            if not path.is_file():  # else finished before a resumed run's kill
                maps = sensitivity_maps(
                    model, patches, config, raster.pixel_size_m, session=session, clean=clean
                )
                if skill:  # what the candidates are ranked by, kept before the raster
                    grid = _object_grid(patches, raster, landuse, config)
                    effects = _sample_effects(maps, patches, grid)
                    if checkpoints is not None:
                        checkpoints.save_effects(name, effects)
                weighted = config.explain.aggregation == "exceedance"
                write_sensitivity(
                    path,
                    maps,
                    patches.row_off,
                    patches.col_off,
                    transform=raster.transform,
                    crs=raster.crs,
                    width=raster.width,
                    height=raster.height,
                    aggregation="mean" if weighted else config.explain.aggregation,
                    model=model_text(config, region.name),
                    weights=sample_weights(region, members) if weighted else None,
                )
            # One threshold for the zone statistics and the polygons (one pass over the map).
            hot = raster_hotspot_threshold(path, config.explain.hotspot_share)
            if landuse is not None and classes is not None:
                zone = region_landuse_statistics(
                    path, landuse, classes, region=region.name, threshold=hot
                )
                zones.append(mark_drivers(zone, skill))
                drivers = zones[-1].table.loc[zones[-1].table["driver"], "class"].tolist()
            if not skill:
                continue
            hotspots.append(
                region_hotspots(path, landuse, classes, region=region.name, threshold=hot)
            )
            if grid is None:
                grid = _object_grid(patches, raster, landuse, config)
            if effects is None and checkpoints is not None:
                effects = checkpoints.load_effects(name)
            if effects is None:  # a run killed before its effects were kept
                maps = sensitivity_maps(
                    model, patches, config, raster.pixel_size_m, session=session, clean=clean
                )
                effects = _sample_effects(maps, patches, grid)
            candidates.append(
                _region_candidates(region, members, grid, effects, raster, config, drivers)
            )
    if zones:
        write_landuse_sensitivity(out / "landuse_sensitivity.csv", zones)
        write_geodetector(out / "geodetector.csv", zones)
    crs = dataset.regions[0].rasters[0].crs
    write_hotspots(out / "hotspots.gpkg", hotspots, crs=crs)
    write_candidates(out / "candidates.gpkg", candidates, crs=crs)


def explanation_rows(
    cv: dict[str, CVResult], region: RegionSamples, dataset: Dataset, config: Config
) -> np.ndarray:
    """Rows of ``region.table`` whose patches are occluded: all of them, or at most
    ``explain.max_samples`` stratified by label and CV fold
    (:func:`soilsource.explain.subset.explained_rows`)."""
    _, folds = oof(cv, region, dataset)
    return explained_rows(
        region.labels, folds, config.explain.max_samples, seed=derive_seed(config.train.seed, 13)
    )


@dataclass(frozen=True)
class _ObjectGrid:
    """The objects of one explained raster (land-use parcels cut in cells, or cells),
    on the part of the raster the explained patches cover."""

    window: rasterio.windows.Window
    labels: np.ndarray
    names: list[str]
    window_px: int


def _object_grid(
    patches: Patches | PatchStore, raster: Any, landuse: Any, config: Config
) -> _ObjectGrid:
    """:func:`~soilsource.explain.candidates.object_labels` of the patches' window."""
    window_px, _ = sensitivity.occlusion_px(
        config.explain.window_m, config.explain.stride_m, raster.pixel_size_m
    )
    window = covered_window(patches, raster.height, raster.width)
    codes = None if landuse is None else landuse.on_grid(raster, window)
    valid = np.ones((int(window.height), int(window.width)), bool)
    labels, names = object_labels(
        codes, None if landuse is None else landuse.classes, 2 * window_px, valid
    )
    return _ObjectGrid(window, labels, names, window_px)


def _sample_effects(
    maps: np.ndarray, patches: Patches | PatchStore, grid: _ObjectGrid
) -> sparse.csr_matrix:
    """Each object's effect on each sample
    (:func:`soilsource.explain.candidates.sample_effects`)."""
    row_off = patches.row_off - int(grid.window.row_off)
    col_off = patches.col_off - int(grid.window.col_off)
    return sample_effects(maps, row_off, col_off, grid.labels, grid.window_px)


def _region_candidates(
    region: RegionSamples,
    members: np.ndarray,
    grid: _ObjectGrid,
    effects: sparse.csr_matrix,
    raster: Any,
    config: Config,
    drivers: list[str],
) -> Any:
    """Candidate source objects of one region's raster (:mod:`soilsource.explain.candidates`),
    of its driving classes (all classes when none drives)."""
    table = object_effects(effects, sample_weights(region, members), seed=config.train.seed)
    xy = region.table[["x", "y"]].to_numpy(float)[members]
    return region_candidates(
        table,
        grid.labels,
        grid.names,
        transform=rasterio.windows.transform(grid.window, raster.transform),
        crs=raster.crs,
        region=region.name,
        sample_xy=xy,
        sample_values=region.table["value"].to_numpy(float)[members],
        affected=effects,
        top=config.explain.candidates,
        classes=drivers,
    )


def probability_maps(
    folder: Path,
    dataset: Dataset,
    config: Config,
    cv: dict[str, CVResult],
    *,
    session: Session | None = None,
) -> None:
    """``probability/REGION.tif`` (and ``concentration/REGION.tif`` for a model of the
    concentration), and ``applicability/REGION.tif``: the final SI-LICNet's maps of each
    region and where they apply (:mod:`soilsource.mapping.applicability`)."""
    for region in dataset:
        model = final_model(cv, region.name)
        if model is None:
            continue
        record = map_record(region, model, config, dataset)
        aoa = None
        for k, raster in enumerate(region.rasters):
            name = f"{output_name(region, k)}.tif"
            where = folder.parent / "applicability" / name
            if not where.is_file():  # else finished before a resumed run's kill
                if aoa is None:  # the training set save_models kept before the maps
                    scope = safe_stem(scope_key(cv, region.name))
                    aoa = Applicability.load(
                        applicability_file(folder.parent / "models" / scope / MODEL, region.name)
                    )
                write_applicability(
                    where,
                    *_network(model),
                    raster,
                    aoa,
                    max_nodata_share=config.patch.max_nodata_share,
                    model_text=record["model_text"],
                    rule_text=record["rule_text"],
                )
            if (folder / name).is_file():
                continue  # finished before a resumed run's kill
            write_probability_map(
                folder / name,
                *_network(model),
                raster,
                max_nodata_share=config.patch.max_nodata_share,
                session=session,
                rule=rule_of(record, getattr(model.inner, "link_", None)),
                concentration_path=folder.parent / "concentration" / name,
                rule_text=record["rule_text"],
                model_text=record["model_text"],
            )


def map_record(
    region: RegionSamples, model: Any, config: Config, dataset: Dataset
) -> dict[str, Any]:
    """How a region's maps are made, as plain JSON (saved with the model for ``predict``).

    ``rule``: the :class:`~soilsource.mapping.probability.MapRule` without its link (None for a
    classifier); ``rule_text`` and ``model_text``: the ``RULE`` and ``MODEL`` tags of the
    maps (:mod:`soilsource.gisout`).
    """
    link = getattr(getattr(model, "inner", model), "link_", None)
    rule = None if link is None else map_rule(region, link, config)
    text = f"{config.metal} {dataset.rule}"
    return {
        "rule": None if rule is None else rule.to_dict(),
        "rule_text": text if rule is None else f"{text}; map: {rule.note}",
        "model_text": model_text(config, region.name),
    }


def model_text(config: Config, region: str) -> str:
    """The ``MODEL`` tag of a region's rasters: the model file, relative to the run."""
    scope = region if config.train.scope == "region" else "pooled"
    return f"SI-LICNet, models/{safe_stem(scope)}/{MODEL}.pt"


def rule_of(record: dict[str, Any], link: Any) -> MapRule | None:
    """The :class:`~soilsource.mapping.probability.MapRule` of a :func:`map_record`
    (None: a classifier)."""
    return (
        None if record["rule"] is None or link is None else MapRule.from_dict(record["rule"], link)
    )


def region_applicability(
    model: Standardized, region: RegionSamples, cv: dict[str, CVResult], dataset: Dataset
) -> Applicability:
    """The area of applicability of a region's final model: its samples' pooled features
    and their cross-validation folds (Meyer & Pebesma 2021)."""
    features = pooled_features(_network(model)[0], model.transform(region.patches.physical()))
    return Applicability(features, oof(cv, region, dataset)[1])


def map_rule(region: RegionSamples, link: Any, config: Config) -> MapRule:
    """The limits a region's maps are computed against
    (see :class:`~soilsource.mapping.probability.MapRule`).

    One limit when every sample of the region has the same (a threshold, a background, a
    quantile). Under a pH-dependent rule, the limits at each pixel's pH from ``mapping.ph``,
    or without it at the region's sample-median pH, for paddy and for other land, weighted
    by the region's paddy share.
    """
    table = region.table
    limits = table["limit"].to_numpy(dtype=float)
    share = float(table["paddy"].mean()) if "paddy" in table.columns else 0.0
    if config.label.rule == "gb15618" and config.mapping.ph is not None:
        note = (
            f"GB 15618-2018 at each pixel's pH (mapping.ph); paddy share {share:.2f} of the "
            "samples weights the paddy and other-land limits"
        )
        return MapRule(
            link,
            (),
            (share, 1.0 - share),
            note,
            ph_path=config.mapping.ph,
            metal=config.single_metal,
        )
    if config.label.rule != "gb15618" or np.unique(limits).size == 1:
        level = float(np.median(limits))
        return MapRule(link, (level,), (1.0,), f"limit {level:g} mg/kg")
    ph = float(np.median(table["ph"].to_numpy(dtype=float)))
    paddy, other = gb15618_screening_value(
        config.single_metal, np.array([ph, ph]), np.array([1, 0])
    )
    note = (
        f"GB 15618-2018 at the region's sample-median pH {ph:.2f}: {paddy:g} mg/kg on paddy "
        f"(share {share:.2f} of the samples), {other:g} mg/kg elsewhere"
    )
    return MapRule(link, (float(paddy), float(other)), (share, 1.0 - share), note)


# --- outputs ------------------------------------------------------------------------------


def build_metrics(
    dataset: Dataset, config: Config, cv: dict[str, dict[str, CVResult]]
) -> dict[str, Any]:
    """``metrics.json``: per region n, positives, AUC with 95 % interval, baselines.

    Per region also: the fold design and its distances (``cv``), SI-LICNet minus each
    baseline on the same folds with a paired-bootstrap interval (``auc_diff``), whether
    the AUC interval lies above 0.5 (``skill``), the Brier score, and for a model of the
    concentration the Spearman correlation of the predicted and measured values.
    """
    regions: dict[str, Any] = {}
    for region in dataset:
        result = region_result(cv[MODEL], region.name)
        main = result.regions[region.name].to_dict()
        main["n_dropped"] = len(region.dropped)
        main["baselines"] = {
            name: _auc_entry(region_result(cv[name], region.name).regions[region.name].to_dict())
            for name in config.model.baselines
        }
        proba, _ = oof(cv[MODEL], region, dataset)
        labels = region.labels
        main["cv"] = result.design
        main["auc_diff"] = {}
        for name in config.model.baselines:
            diff = paired_auc_difference(
                labels, proba, oof(cv[name], region, dataset)[0], seed=derive_seed(result.seed, 9)
            )
            main["auc_diff"][name] = None if diff is None else [round(v, 4) for v in diff]
        main["skill"], reason = skill_verdict(result.regions[region.name])
        if reason:
            main["skill_reason"] = reason
        main["brier"] = brier_score(labels, proba)
        main["explained_samples"] = len(explanation_rows(cv[MODEL], region, dataset, config))
        predicted = oof_values(cv[MODEL], region, dataset)
        if predicted is not None:
            ok = np.isfinite(predicted)
            rho = spearmanr(predicted[ok], region.table["value"].to_numpy()[ok]).statistic
            main["spearman_value"] = None if not np.isfinite(rho) else round(float(rho), 4)
        regions[region.name] = main
    overall = {}
    for key, result in cv[MODEL].items():
        overall[key] = result.metrics()["overall"]
    return {
        "metal": config.metal,
        **({"title": config.name} if config.name else {}),
        "rule": dataset.rule,
        "target": config.model.target,
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


def skill_verdict(entry: AUCResult) -> tuple[bool, str | None]:
    """Whether a region's model has skill (its AUC interval lies above 0.5), and if not, why.

    A region without skill gets no hotspots, no candidate sources and no driving land use,
    and the report greys its maps: what such a model attributes is not evidence.

    >>> skill_verdict(AUCResult(100, 40, 0.71, (0.61, 0.80)))
    (True, None)
    >>> skill_verdict(AUCResult(100, 40, 0.56, (0.45, 0.66)))[1]
    'AUC 0.56, 95 % interval [0.45, 0.66] reaches 0.5: no skill shown'
    """
    if entry.auc is None:
        return False, f"no AUC ({entry.reason or 'not computed'})"
    if entry.ci95 is None:
        return False, f"AUC {entry.auc:.2f} without an interval: no skill shown"
    lo, hi = entry.ci95
    if lo > 0.5:
        return True, None
    return (
        False,
        f"AUC {entry.auc:.2f}, 95 % interval [{lo:.2f}, {hi:.2f}] reaches 0.5: no skill shown",
    )


def _auc_entry(entry: dict[str, Any]) -> dict[str, Any]:
    keep = ("auc", "auc_ci95", "auc_null_reason")
    return {k: entry[k] for k in keep if k in entry}


def write_predictions(path: Path, dataset: Dataset, cv: dict[str, dict[str, CVResult]]) -> None:
    """``predictions.csv``: out-of-fold probability, predicted value and fold of every sample.

    SPEC columns first (``prob`` and ``pred_value`` are SI-LICNet's; ``pred_value`` is the
    predicted median concentration, mg/kg, empty for label models; ``limit`` the sample's
    rule value, mg/kg), ``lon`` and ``lat`` (WGS 84, EPSG:4326) and ``crs`` (the CRS of
    ``x`` and ``y``: the imagery's, e.g. ``EPSG:28992``), then ``prob_<baseline>`` and
    ``pred_value_<baseline>``. Coordinates keep full precision (UTM northings need ten
    digits and more).
    """
    frames = []
    for region in dataset:
        frame = region.table[["sample_id", "region", "x", "y", "value", "label"]].copy()
        frame["prob"], frame["fold"] = oof(cv[MODEL], region, dataset)
        frame["pred_value"] = _values(oof_values(cv[MODEL], region, dataset), len(region))
        frame["limit"] = region.table["limit"].to_numpy()
        frame["lon"], frame["lat"], frame["crs"] = _lonlat(region)
        for name in cv:
            if name != MODEL:
                frame[f"prob_{name}"] = oof(cv[name], region, dataset)[0]
                frame[f"pred_value_{name}"] = _values(
                    oof_values(cv[name], region, dataset), len(region)
                )
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    for column in table.columns:
        if column.startswith(("prob", "pred_value")):
            table[column] = table[column].map(lambda v: float(f"{v:.6g}"))
    write_text_atomic(path, table.to_csv(index=False))


def _lonlat(region: RegionSamples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Longitude, latitude (EPSG:4326) and the CRS of ``x``, ``y`` of each sample."""
    table = region.table
    lon, lat = np.full(len(table), np.nan), np.full(len(table), np.nan)
    crs = np.empty(len(table), dtype=object)
    which = table["raster"].to_numpy()
    for k, raster in enumerate(region.rasters):
        rows = which == k
        lon[rows], lat[rows] = reproject_points(
            table["x"].to_numpy()[rows], table["y"].to_numpy()[rows], raster.crs, "EPSG:4326"
        )
        crs[rows] = crs_code(raster.crs)
    return lon, lat, crs


def _values(values: np.ndarray | None, n: int) -> np.ndarray:
    return np.full(n, np.nan) if values is None else values


def write_roc_figures(folder: Path, dataset: Dataset, cv: dict[str, dict[str, CVResult]]) -> None:
    """``figures/roc_REGION.png``: SI-LICNet and the baselines on one plot per region."""
    for region in dataset:
        probabilities = {name: oof(cv[name], region, dataset)[0] for name in cv}
        aucs = {name: region_result(cv[name], region.name).regions[region.name].auc for name in cv}
        result = region_result(cv[MODEL], region.name)
        note = f"{result.cv} CV, {result.folds} folds" + (
            f", blocks of {result.block_m:g} m"
            if result.block_m
            else (" (optimistic)" if result.optimistic else "")
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
            if name == MODEL:  # what `soilsource predict` needs to map new imagery alike
                metadata["imagery"] = imagery_record(_scope_regions(dataset, key)[0].rasters[0])
                metadata["maps"] = {
                    region.name: map_record(region, estimator, config, dataset)
                    for region in _scope_regions(dataset, key)
                }
                for region in _scope_regions(dataset, key):
                    region_applicability(estimator, region, cv[name], dataset).save(
                        applicability_file(folder / safe_stem(key) / name, region.name)
                    )
            save_estimator(folder / safe_stem(key) / name, estimator, metadata)


def applicability_file(model_path: Path, region: str) -> Path:
    """Where a region's area-of-applicability training set is kept beside its model file
    (``models/SCOPE/silicnet.aoa-REGION.npz``), for ``predict``."""
    return model_path.with_name(f"{model_path.stem}.aoa-{safe_stem(region)}.npz")


def _scope_regions(dataset: Dataset, key: str) -> list[RegionSamples]:
    """The regions a model of scope ``key`` (a region's name, or ``pooled``) covers."""
    return list(dataset) if key == "pooled" else [r for r in dataset if r.name == key]


def _write_config(path: Path, config: Config) -> None:
    text = "# Resolved configuration of this run (paths absolute, defaults filled in).\n"
    write_text_atomic(path, text + config.to_yaml())


@contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall time of a step in ``seconds[name]`` (for ``run.json``)."""
    start = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - start, 2)


__all__ = [
    "MODEL",
    "RunResult",
    "SeveralResult",
    "evaluate",
    "execute",
    "execute_several",
    "run",
    "run_several",
]
