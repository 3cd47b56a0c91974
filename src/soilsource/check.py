"""``soilsource check``: can these inputs be used? Everything short of training.

:func:`check` reads the configuration, the samples, the imagery metadata and
every sample's patch (to count nodata), the land-use sources and class table,
applies the label rule, and returns a :class:`CheckSummary`. It writes nothing.
Problems that make the inputs unusable raise
:class:`~soilsource.errors.InputError`; problems that only weaken the result
(some samples outside the imagery, a region with one class) become warnings in
the summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np

from soilsource.config import Config, load_config
from soilsource.errors import InputError
from soilsource.inputs import (
    RasterInfo,
    assign_rasters,
    describe_crs,
    describe_raster,
    open_landuse,
    read_samples,
    reproject_points,
    resolve_imagery,
)
from soilsource.inputs.reference import read_reference
from soilsource.labels import label_samples
from soilsource.patches import iter_patches, one_patch_size, patch_size_px
from soilsource.progress import track


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
class CheckSummary:
    """The result of :func:`check` (the command line prints it)."""

    config: str
    metal: str
    rule: str
    patch_size_m: float
    max_nodata_share: float
    inputs: list[InputCheck]
    regions: list[RegionCheck]
    warnings: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        """All samples."""
        return sum(r.n for r in self.regions)

    @property
    def n_pos(self) -> int:
        """All positive samples under the rule."""
        return sum(r.n_pos for r in self.regions)

    def to_dict(self) -> dict:
        """Plain data (e.g. for JSON)."""
        return {
            "config": self.config,
            "metal": self.metal,
            "rule": self.rule,
            "n": self.n,
            "n_pos": self.n_pos,
            "patch_size_m": self.patch_size_m,
            "inputs": [vars(i) for i in self.inputs],
            "regions": {r.name: vars(r) | {"n_usable": r.n_usable} for r in self.regions},
            "warnings": list(self.warnings),
        }


def check(config: Config | str | PathLike[str], *, threads: int = 2) -> CheckSummary:
    """Validate every input of a configuration and summarise it, without training.

    Parameters
    ----------
    config:
        A :class:`~soilsource.config.Config` or the path of a YAML configuration.
    threads:
        Reader threads for the patches.

    Raises
    ------
    InputError
        Anything that makes the inputs unusable (see ``issues show 3``, item 8):
        the message names the file and the key, column, rows or region.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    samples = read_samples(config.samples)
    source = Path(config.samples.path)
    labels = label_samples(samples, config.label, config.metal, source=source)
    regions = sorted(samples["region"].unique().tolist())
    imagery = resolve_imagery(config.imagery, regions)
    x = samples.geometry.x.to_numpy()
    y = samples.geometry.y.to_numpy()
    region_of = samples["region"].to_numpy()
    warnings: list[str] = []
    results = []
    for region in regions:
        mask = region_of == region
        results.append(
            _check_region(
                region,
                np.flatnonzero(mask),
                x,
                y,
                samples.crs,
                labels.positive,
                imagery[region],
                config,
                warnings,
                threads,
            )
        )
    sizes = {size for r in results for size in r.patch_px}
    one_patch_size(sizes, config.patch.size_m, config.source or "config")
    inputs = [InputCheck("samples", str(source), describe_crs(samples.crs), f"{len(samples)} rows")]
    seen: set[Path] = set()
    for rasters in imagery.values():
        for raster in rasters:
            if raster.path not in seen:
                seen.add(raster.path)
                inputs.append(_describe_imagery(raster))
    if config.landuse is not None:
        inputs.extend(_check_landuse(config, regions))
    inputs.extend(mapping_inputs(config))
    return CheckSummary(
        config=str(config.source) if config.source else "",
        metal=config.metal,
        rule=labels.description,
        patch_size_m=config.patch.size_m,
        max_nodata_share=config.patch.max_nodata_share,
        inputs=inputs,
        regions=results,
        warnings=warnings,
    )


def mapping_inputs(config: Config) -> list[InputCheck]:
    """Validate the rasters of ``mapping`` (study area, pH) and the reference layers of
    ``report``; ``run`` calls this before training.

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


def _check_region(
    region: str,
    index: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    crs,
    positive: np.ndarray,
    rasters: list[RasterInfo],
    config: Config,
    warnings: list[str],
    threads: int,
) -> RegionCheck:
    which = assign_rasters(x[index], y[index], crs, rasters)
    n, n_pos = len(index), int(positive[index].sum())
    n_outside = int((which < 0).sum())
    if n_outside == n:
        raster = rasters[0]
        raise InputError(
            raster.path,
            "",
            f"none of the {n} samples of region '{region}' falls inside this raster "
            f"(samples in {describe_crs(crs)}, raster in {raster.describe_crs()}); "
            "check samples.crs and the x/y columns",
        )
    if n_outside:
        warnings.append(
            f"region '{region}': {n_outside} of {n} samples outside the imagery (left out)"
        )
    n_nodata = 0
    sizes = []
    for k, raster in enumerate(rasters):
        members = index[which == k]
        if len(members) == 0:
            continue
        size = patch_size_px(config.patch.size_m, raster)
        sizes.append(size)
        rx, ry = reproject_points(x[members], y[members], crs, raster.crs)
        points = np.column_stack([rx, ry])
        batches = iter_patches(raster, points, size, threads=threads, reuse=True)
        total = -(-len(members) // 256)
        for patches in track(batches, f"patches of region {region}", total=total):
            n_nodata += int((patches.nodata_share > config.patch.max_nodata_share).sum())
    if n_nodata:
        warnings.append(
            f"region '{region}': {n_nodata} samples with more than "
            f"{config.patch.max_nodata_share:.0%} nodata in their patch"
        )
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        kind = "negative" if n_pos == 0 else "positive"
        warnings.append(
            f"region '{region}': all {n} samples are {kind} under the rule; "
            "its AUC cannot be computed"
        )
    elif min(n_pos, n_neg) < config.train.folds:
        warnings.append(
            f"region '{region}': only {min(n_pos, n_neg)} samples of the rarer class "
            f"for {config.train.folds} folds"
        )
    return RegionCheck(
        name=region,
        n=n,
        n_pos=n_pos,
        n_outside=n_outside,
        n_nodata=n_nodata,
        patch_px=sorted(set(sizes)),
        rasters=[r.path.name for r in rasters],
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


def print_summary(summary: CheckSummary, console) -> None:
    """Print a :class:`CheckSummary` for people: inputs with CRS, a table per region.

    Warnings go to stderr through :func:`soilsource.progress.warn`.
    """
    from rich.markup import escape
    from rich.table import Table

    from soilsource.progress import warn

    base = Path(summary.config).resolve().parent if summary.config else None
    console.print(f"configuration: {escape(summary.config)}", soft_wrap=True)
    console.print(
        f"{summary.n} samples, {summary.n_pos} positive: {summary.metal} {summary.rule}",
        soft_wrap=True,
    )
    groups: dict[tuple[str, str, str], list[str]] = {}
    for item in summary.inputs:  # e.g. six region rasters alike but for the file name
        groups.setdefault((item.role, item.crs, item.detail), []).append(item.path)
    for (role, crs, detail), paths in groups.items():
        files = ", ".join(_relative(p, base) for p in paths)
        count = f" ({len(paths)} files)" if len(paths) > 1 else ""
        console.print(escape(f"{role}: {files}{count}; CRS {crs}; {detail}"), soft_wrap=True)
    table = Table(
        title=f"Regions (patches of {summary.patch_size_m:g} m)",
        caption=(
            "outside: samples outside the imagery; nodata: samples with more than "
            f"{summary.max_nodata_share:.0%} of their patch without data"
        ),
    )
    table.add_column("region", no_wrap=True)
    for column in ("samples", "positive", "outside", "nodata", "usable"):
        table.add_column(column, justify="right")
    table.add_column("patch px", justify="right", no_wrap=True)
    for r in summary.regions:
        size = ", ".join(f"{s} x {s}" for s in r.patch_px)
        cells = (r.n, r.n_pos, r.n_outside, r.n_nodata, r.n_usable)
        table.add_row(escape(r.name), *(str(c) for c in cells), size)
    console.print(table)
    for message in summary.warnings:
        warn(message)
    console.print(
        "inputs OK" + (f" ({len(summary.warnings)} warnings)" if summary.warnings else "")
    )


def _relative(path: str, base: Path | None) -> str:
    """``path`` relative to the configuration's directory when it is inside it."""
    if base is None:
        return path
    try:
        return str(Path(path).resolve().relative_to(base))
    except ValueError:
        return path
