"""``soilsource check``: can these inputs be used? Everything short of training.

:func:`check` runs the preflight that ``run`` runs (:func:`soilsource.pipeline.preflight.plan`:
configuration, samples, imagery and every sample's patch, land use and class table,
label rule, mapping rasters, memory) and returns a :class:`CheckSummary` of what it
found. It writes nothing. Problems that make the inputs unusable raise
:class:`~soilsource.errors.InputError`; problems that only weaken the result (some
samples outside the imagery, a region with one class) become warnings in the summary.
There is no validation here of its own: what ``check`` accepts, ``run`` accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import cast

from soilsource.config import Config, load_config
from soilsource.pipeline.preflight import (
    InputCheck,
    RegionCheck,
    RunPlan,
    mapping_inputs,
    plan,
    plan_several,
)

__all__ = ["CheckSummary", "InputCheck", "RegionCheck", "check", "mapping_inputs", "print_summary"]


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
        Anything that makes the inputs unusable (:func:`soilsource.pipeline.preflight.plan`):
        the message names the file and the key, column, rows or region.
    """
    return _summary(plan(config, keep_patches=False, threads=threads))


def _summary(found: RunPlan) -> CheckSummary:
    config = found.config
    return CheckSummary(
        config=str(config.source) if config.source else "",
        metal=cast(str, config.metal),  # one metal's plan
        rule=found.dataset.rule,
        patch_size_m=config.patch.size_m,
        max_nodata_share=config.patch.max_nodata_share,
        inputs=found.inputs,
        regions=found.regions,
        warnings=found.warnings,
    )


def check_all(config: Config | str | PathLike[str], *, threads: int = 2) -> list[CheckSummary]:
    """:func:`check` of each metal of a configuration (one summary for one metal).

    A several-metal configuration goes through :func:`soilsource.pipeline.preflight.plan_several`,
    the preflight of ``run``: every metal, and the ``sources:`` settings and table.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    if not config.several:
        return [check(config, threads=threads)]
    return [_summary(found) for found in plan_several(config, threads=threads)]


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
