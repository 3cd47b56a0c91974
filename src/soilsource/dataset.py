"""The dataset layer: every usable sample with its label and its image patch, per region.

This is where inputs, labels and patches meet (as a TorchGeo dataset joins files,
samplers and transforms): :func:`load_dataset` reads the configuration's samples,
applies the label rule, finds each sample's raster, and cuts its patch. Samples
outside the imagery or with too much nodata in their patch are left out with a
warning that says how many, never silently; what is left out is kept in
:attr:`RegionSamples.dropped` for the report.

Patches stay in physical units with a validity mask; normalisation happens inside
cross-validation, from each fold's training samples only
(:class:`soilsource.training.Standardized`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from soilsource.config import Config
from soilsource.errors import InputError
from soilsource.inputs import RasterInfo, assign_rasters, read_samples, reproject_points
from soilsource.inputs.imagery import resolve_imagery
from soilsource.labels import label_samples
from soilsource.patches import Patches, extract_patches, one_patch_size, patch_size_px
from soilsource.progress import warn

PATCH_MEMORY_FACTOR = 4
"""Copies of a region's patches alive at once in a run: the patches, their copy in
physical units with NaN, a fold's standardised training set, a pooled concatenation."""


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
        Patches in the order of ``table`` (physical units, validity mask).
    dropped:
        Samples left out, with the reason (``outside imagery`` or ``nodata``).
    """

    name: str
    rasters: list[RasterInfo]
    table: pd.DataFrame
    patches: Patches
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

    def concat(self) -> tuple[Patches, pd.DataFrame]:
        """Patches and table of all regions together (scope ``pooled``)."""
        patches = concat_patches([r.patches for r in self.regions])
        return patches, pd.concat([r.table for r in self.regions], ignore_index=True)


def load_dataset(config: Config, *, threads: int = 2) -> Dataset:
    """Read samples, labels and patches for every region of ``config``.

    Raises
    ------
    InputError
        Whatever :func:`soilsource.check.check` would refuse (unreadable files,
        bad columns, no sample inside the imagery, ...).
    """
    samples = read_samples(config.samples)
    source = Path(config.samples.path)
    labels = label_samples(samples, config.label, config.metal, source=source)
    samples = samples.assign(limit=labels.limit, label=labels.positive.astype(np.int64))
    names = sorted(samples["region"].unique().tolist())
    imagery = resolve_imagery(config.imagery, names)
    regions = [
        _region(name, samples[samples["region"] == name], imagery[name], config, threads)
        for name in names
    ]
    size = one_patch_size({r.patch_px for r in regions}, config.patch.size_m, _source(config))
    return Dataset(regions, labels.description, regions[0].patches.band_names, size)


def _region(
    name: str, samples: pd.DataFrame, rasters: list[RasterInfo], config: Config, threads: int
) -> RegionSamples:
    x = samples.geometry.x.to_numpy()
    y = samples.geometry.y.to_numpy()
    which = assign_rasters(x, y, samples.crs, rasters)
    tables, patch_parts, dropped = [], [], []
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
            one_patch_size({patch_parts[0].size_px, size}, config.patch.size_m, _source(config))
        check_memory(len(members), raster.count, size, config)
        patches = extract_patches(raster, np.column_stack([rx, ry]), size, threads=threads)
        keep = patches.nodata_share <= config.patch.max_nodata_share
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
        patch_parts.append(patches.subset(np.flatnonzero(keep)))
    lost = pd.concat(dropped, ignore_index=True) if dropped else pd.DataFrame()
    for reason, count in lost.groupby("reason").size().items() if len(lost) else []:
        warn(f"region '{name}': {count} of {len(samples)} samples left out ({reason})")
    table = pd.concat(tables, ignore_index=True)
    return RegionSamples(name, list(rasters), table, concat_patches(patch_parts), lost)


def check_memory(n: int, bands: int, size_px: int, config: Config) -> None:
    """Refuse, before reading or training, patches that cannot fit in the free memory.

    Needs ``n * bands * size_px**2 * 4`` bytes (float32) times
    :data:`PATCH_MEMORY_FACTOR`; a run that would swap or be killed by the system
    hours later fails now with a line naming ``patch.size_m``.
    """
    need = n * bands * size_px**2 * 4 * PATCH_MEMORY_FACTOR
    free = psutil.virtual_memory().available
    if need > free:
        raise InputError(
            config.source or "config",
            "key 'patch.size_m'",
            f"{n} patches of {size_px} x {size_px} px and {bands} bands need about "
            f"{_size(need)} of memory, {_size(free)} is free; use a smaller patch.size_m",
        )


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


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
            "reason": reason,
        }
    )
