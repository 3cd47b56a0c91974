"""The dataset layer: every usable sample with its label and its image patch, per region.

This is where inputs, labels and patches meet (as a TorchGeo dataset joins files,
samplers and transforms): :func:`load_dataset` reads the configuration's samples,
applies the label rule, finds each sample's raster, and cuts its patch. Samples
outside the imagery or with too much nodata in their patch are left out with a
warning that says how many, never silently; what is left out is kept in
:attr:`RegionSamples.dropped` for the report.

Patches stay in physical units with a validity mask; normalisation happens inside
cross-validation, from each fold's training samples only
(:class:`soilsource.learn.training.Standardized`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import psutil

from soilsource.config import Config
from soilsource.data.context import with_context
from soilsource.data.labels import label_samples
from soilsource.data.patches import (
    CacheBudget,
    Patches,
    PatchStore,
    cache_bytes,
    one_patch_size,
    patch_size_px,
    sample_patches,
)
from soilsource.errors import InputError, size_text
from soilsource.inputs import (
    RasterInfo,
    assign_rasters,
    describe_crs,
    read_samples,
    reproject_points,
)
from soilsource.inputs.imagery import describe_raster, prediction_points, resolve_imagery
from soilsource.progress import warn


@dataclass
class RegionSamples:
    """The usable samples of one region, their labels and their patches.

    Attributes
    ----------
    name:
        Region name.
    rasters:
        The imagery rasters the region's samples fall in (usually one).
    table:
        One row per usable sample: sample_id, region, x, y (in the CRS of the
        sample's raster), value, limit, label (0/1), raster (index into ``rasters``).
    patches:
        Patches in the order of ``table`` (physical units, validity mask), read on
        demand or from the cache (:class:`~soilsource.data.patches.PatchStore`).
    dropped:
        Samples left out, with the reason (``outside imagery`` or ``nodata``).
    """

    name: str
    rasters: list[RasterInfo]
    table: pd.DataFrame
    patches: PatchStore
    dropped: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def labels(self) -> np.ndarray:
        """0/1 labels (1 = contaminated under the rule)."""
        return self.table["label"].to_numpy(dtype=np.int64)

    @property
    def xy(self) -> np.ndarray:
        """(N, 2) sample coordinates in metres, in the raster CRS."""
        return self.table[["x", "y"]].to_numpy(dtype=np.float64)

    @property
    def patch_px(self) -> int:
        """Side of the patches in pixels."""
        return self.patches.size_px


@dataclass
class Dataset:
    """All regions of a configuration, ready for training."""

    regions: list[RegionSamples]
    rule: str
    band_names: tuple[str, ...]
    patch_px: int

    def __iter__(self):
        return iter(self.regions)

    def concat(self) -> tuple[PatchStore, pd.DataFrame]:
        """Patches and table of all regions together (scope ``pooled``; no pixel copied)."""
        patches = PatchStore.concat([r.patches for r in self.regions])
        return patches, pd.concat([r.table for r in self.regions], ignore_index=True)


def load_dataset(
    config: Config,
    *,
    threads: int = 2,
    warnings: list[str] | None = None,
    cache: bool = True,
) -> Dataset:
    """Read samples, labels and patches for every region of ``config``.

    Each patch is read once: its nodata share decides whether the sample is kept, and
    its pixels stay cached within :func:`cache_budget` (``cache=False``: none, as
    ``check`` needs). Warnings (samples left out) are appended to ``warnings`` when it is
    given, else printed; the preflight (:mod:`soilsource.pipeline.preflight`) prints them only
    once every input has passed, so a refused run prints its one error line alone.

    Raises
    ------
    InputError
        Unreadable files, bad columns, a region with no sample inside the imagery or
        none with enough data in its patch, patches too large for the free memory, ...
    """
    samples = read_samples(config.samples)
    source = Path(config.samples.path)
    labels = label_samples(samples, config.label, cast(str, config.metal), source=source)
    samples = samples.assign(limit=labels.limit, label=labels.positive.astype(np.int64))
    names = sorted(samples["region"].unique().tolist())
    imagery = {
        name: [with_context(r, config.patch.context_m) for r in rasters]
        for name, rasters in resolve_imagery(config.imagery, names).items()
    }
    budget = cache_budget(config) if cache else CacheBudget(0)
    found: list[str] = [] if warnings is None else warnings
    regions = [
        _region(
            name, samples[samples["region"] == name], imagery[name], config, threads, budget, found
        )
        for name in names
    ]
    size = one_patch_size({r.patch_px for r in regions}, config.patch.size_m, _source(config))
    if warnings is None:
        for message in found:
            warn(message)
    return Dataset(regions, labels.description, regions[0].patches.band_names, size)


def _region(
    name: str,
    samples: pd.DataFrame,
    rasters: list[RasterInfo],
    config: Config,
    threads: int,
    cache_budget: CacheBudget,
    warnings: list[str],
) -> RegionSamples:
    x = samples.geometry.x.to_numpy()
    y = samples.geometry.y.to_numpy()
    which = assign_rasters(x, y, samples.crs, rasters)
    if (which < 0).all():
        raise InputError(
            rasters[0].path,
            "",
            f"none of the {len(samples)} samples of region '{name}' falls inside this raster "
            f"(samples in {describe_crs(samples.crs)}, raster in {rasters[0].describe_crs()}); "
            "check samples.crs and the x/y columns",
        )
    tables: list[pd.DataFrame] = []
    patch_parts: list[Any] = []
    shares: list[np.ndarray] = []
    dropped: list[pd.DataFrame] = []
    sizes: list[int] = []
    outside = samples.iloc[np.flatnonzero(which < 0)]
    if len(outside):
        dropped.append(_dropped(outside, "outside imagery"))
    for k, raster in enumerate(rasters):
        members = np.flatnonzero(which == k)
        if len(members) == 0:
            continue
        rx, ry = reproject_points(x[members], y[members], samples.crs, raster.crs)
        size = patch_size_px(config.patch.size_m, raster)
        if patch_parts:  # rasters of one region
            one_patch_size({sizes[0], size}, config.patch.size_m, _source(config))
        sizes.append(size)
        check_memory(raster.count, size, config)
        cache = cache_budget.take(len(members) * cache_bytes(raster, size))
        stored, share = sample_patches(
            raster, np.column_stack([rx, ry]), size, cache=cache, threads=threads
        )
        keep = share <= config.patch.max_nodata_share
        part = samples.iloc[members]
        if not keep.all():
            dropped.append(_dropped(part.iloc[np.flatnonzero(~keep)], "nodata"))
        part = part.iloc[np.flatnonzero(keep)]
        extra = {c: part[c].to_numpy() for c in ("ph", "paddy") if c in part.columns}
        tables.append(
            pd.DataFrame(
                {
                    "sample_id": part["sample_id"].astype(str).to_numpy(),
                    "region": name,
                    "x": rx[keep],
                    "y": ry[keep],
                    "value": part["value"].to_numpy(dtype=float),
                    "limit": part["limit"].to_numpy(dtype=float),
                    "label": part["label"].to_numpy(dtype=np.int64),
                    "raster": k,
                    **extra,
                }
            )
        )
        patch_parts.append(stored.keep(np.flatnonzero(keep)))
        shares.append(share[keep])
    lost = pd.concat(dropped, ignore_index=True) if dropped else pd.DataFrame()
    table = pd.concat(tables, ignore_index=True)
    if len(table) == 0:  # every sample inside the imagery has too little data around it
        max_share = config.patch.max_nodata_share
        raise InputError(
            _source(config),
            "key 'patch.max_nodata_share'",
            f"every sample of region '{name}' inside the imagery has more than {max_share:.0%} "
            f"of its {sizes[0]} x {sizes[0]} px patch without data; check the imagery's "
            "nodata or use a smaller patch.size_m",
        )
    for reason, count in lost.groupby("reason").size().items() if len(lost) else []:
        warnings.append(f"region '{name}': {count} of {len(samples)} samples left out ({reason})")
    store = PatchStore(
        patch_parts, rasters[0].band_names, sizes[0], np.concatenate(shares), threads=threads
    )
    return RegionSamples(name, list(rasters), table, store, lost)


def prediction_area(region: RegionSamples, area: Path | None = None, n: int = 1000) -> np.ndarray:
    """About ``n`` points where the region's map is meant (for kNNDM), in its rasters' CRS.

    The valid pixels of ``mapping.area`` (the study area) that fall on the region's
    imagery, or the imagery's valid pixels when there is no such raster.
    """
    if area is None:
        per_raster = max(1, n // len(region.rasters))
        return np.concatenate([prediction_points(r, per_raster) for r in region.rasters])
    study = describe_raster(area, "mapping.area")
    points = prediction_points(study, n * 4)
    parts = []
    for raster in region.rasters:
        x, y = reproject_points(points[:, 0], points[:, 1], study.crs, raster.crs)
        inside = raster.contains(x, y)
        parts.append(np.column_stack([x[inside], y[inside]]))
    found = np.concatenate(parts)
    if len(found) == 0:
        raise InputError(area, "", f"no valid pixel of mapping.area on region '{region.name}'")
    return found


WORKING_PATCHES = 4 * 512
"""Patches held at once besides the cache, whatever the number of samples: a batch of
512 as read (the forest's window statistics), its copy with NaN, scaled, and as a tensor."""


def check_memory(bands: int, size_px: int, config: Config) -> None:
    """Refuse, before reading or training, patches too large for the free memory.

    Patches are read in batches (:class:`~soilsource.data.patches.PatchStore`), so what must
    fit is :data:`WORKING_PATCHES` patches of ``bands * size_px**2 * 4`` bytes, not all
    of them; a run that would swap or be killed hours later fails now, naming
    ``patch.size_m``.
    """
    need = WORKING_PATCHES * bands * size_px**2 * 4
    free = free_memory()
    if need > free:
        raise InputError(
            config.source or "config",
            "key 'patch.size_m'",
            f"patches of {size_px} x {size_px} px and {bands} bands need about {size_text(need)} "
            f"of memory in batches of {WORKING_PATCHES // 4}, {size_text(free)} is free; "
            "use a smaller patch.size_m",
        )


FREE_MEMORY_ENV = "SOILSOURCE_FREE_MEMORY"
"""Bytes of free memory to assume instead of asking the system (tests simulate a small
machine with it)."""


def free_memory() -> int:
    """Bytes of memory available now (``SOILSOURCE_FREE_MEMORY`` overrides)."""
    given = os.environ.get(FREE_MEMORY_ENV)
    if given:
        return int(given)
    return int(psutil.virtual_memory().available)


def cache_budget(config: Config) -> CacheBudget:
    """How much of the patches stays in memory: ``compute.patch_cache_mb``, but at most
    half the memory free now. Regions (in name order) are cached whole while they fit;
    the rest are read from the imagery on demand (:class:`~soilsource.data.patches.PatchStore`),
    so a run never needs memory in proportion to its samples."""
    free_mb = free_memory() / 2**20
    return CacheBudget(min(config.compute.patch_cache_mb, free_mb / 2))


def _source(config: Config) -> str:
    return str(config.source or "config")


def concat_patches(parts: list[Patches]) -> Patches:
    """One :class:`Patches` from several, in order; ``index`` becomes ``0..N-1``."""
    return Patches(
        np.concatenate([p.data for p in parts]),
        np.concatenate([p.valid for p in parts]),
        np.concatenate([p.row_off for p in parts]),
        np.concatenate([p.col_off for p in parts]),
        np.arange(sum(len(p) for p in parts)),
        parts[0].band_names,
    )


def _dropped(samples: pd.DataFrame, reason: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": samples["sample_id"].astype(str).to_numpy(),
            "region": samples["region"].to_numpy(),
            "value": samples["value"].to_numpy(dtype=float),
            "label": samples["label"].to_numpy(dtype=np.int64),
            "reason": reason,
        }
    )
