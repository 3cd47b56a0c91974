"""Source factors joined with the imagery: each factor becomes a run of its own.

Positive matrix factorisation (:mod:`soilsource.sources`) splits the samples x metals
table into source profiles and each sample's contribution from each source. Which
places and land types carry a source is a question about the contributions, and the
pipeline already answers that question for a metal. So each factor's per-sample load,
``contribution x sum of its profile`` (mg/kg of the metals together that the factor
puts into the sample), is written as a column of ``sources/samples.csv`` and learned
from the patches exactly as a metal is, under ``sources/factor_K/``: cross-validated
AUC, a map of the predicted load, occlusion sensitivity, land-use attribution and
candidate sources.

The label of a factor run is the upper quartile of its load (rule ``quantile``): a
factor has no legal limit, and "where this source puts most" is what a user inspects
first.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from soilsource.atomic import write_text_atomic
from soilsource.config import Config
from soilsource.inputs.imagery import crs_code
from soilsource.inputs.samples import read_samples
from soilsource.sources.apportion import Apportionment

__all__ = [
    "FACTOR_QUANTILE",
    "detection_limits",
    "factor_config",
    "factor_label",
    "factor_loads",
    "metal_table",
    "write_factor_samples",
]

FACTOR_QUANTILE = 0.75
"""A factor run's positives: samples above the upper quartile of the factor's load."""

MIN_SHARE_NAMED = 0.25
"""A metal names a factor (``Cd-Zn-Pb``) when the factor holds at least this share of it."""

LOAD_FLOOR = 0.01
"""Loads are floored at this share of the factor's median positive load before the log
the models learn: a zero contribution means "none measurable", not minus infinity."""


def metal_table(config: Config) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """The samples (id, region, point) and their measured metals (samples x metals, mg/kg).

    Every metal is read through the same reader as a single-metal run, so a bad cell
    is reported with its column and row exactly as there.
    """
    samples: gpd.GeoDataFrame | None = None
    values = {}
    for metal in config.metals:
        table = read_samples(config.for_metal(metal).samples)
        if samples is None:
            samples = table[["sample_id", "region", "geometry"]].copy()
        values[metal] = table["value"].to_numpy(dtype=float)
    assert samples is not None
    frame = pd.DataFrame(values, index=pd.Index(samples["sample_id"], name="sample_id"))
    return samples, frame


def detection_limits(config: Config, values: pd.DataFrame) -> dict[str, float]:
    """Every metal's detection limit, mg/kg: ``sources.detection_limit``'s, else half the
    metal's smallest measured positive value, a limit no sample is below."""
    assert config.sources is not None
    given = config.sources.detection_limit
    out = {}
    for metal in values.columns:
        positive = values[metal][values[metal] > 0]
        default = 0.5 * float(positive.min()) if len(positive) else 1e-6
        out[metal] = float(given[metal]) if metal in given else default
    return out


def factor_loads(apportionment: Apportionment) -> pd.DataFrame:
    """Per sample and factor: contribution x the factor's summed profile, mg/kg
    (samples x factors, from the apportionment's own matrices)."""
    per_unit = apportionment.profile_matrix("mg_kg_per_unit").sum(axis=1)
    wide = apportionment.contribution_matrix()
    return wide.mul(per_unit.reindex(wide.columns), axis=1)


def factor_label(profiles: pd.DataFrame, factor: int) -> str:
    """``Cd-Zn-Pb``: the metals of which ``factor`` holds at least a quarter, largest first.

    With none that large, the metal of its largest share.
    """
    rows = profiles[profiles["factor"] == factor].sort_values("share", ascending=False)
    named = rows[rows["share"] >= MIN_SHARE_NAMED]["metal"].tolist()
    return "-".join(named or rows["metal"].head(1).tolist())


def write_factor_samples(
    samples: gpd.GeoDataFrame, loads: pd.DataFrame, path: Path
) -> tuple[str, list[str]]:
    """``sources/samples.csv``: id, region, x, y and one load column per factor.

    Returns the CRS the coordinates are in and the factor columns. Loads are floored
    (:data:`LOAD_FLOOR`) so that the log the models learn stays finite.
    """
    table = pd.DataFrame(
        {
            "sample_id": samples["sample_id"].to_numpy(),
            "region": samples["region"].to_numpy(),
            "x": samples.geometry.x.to_numpy(),
            "y": samples.geometry.y.to_numpy(),
        }
    )
    columns = []
    for factor in loads.columns:
        load = loads[factor].reindex(table["sample_id"]).to_numpy(dtype=float)
        positive = load[load > 0]
        floor = LOAD_FLOOR * (float(np.median(positive)) if positive.size else 1.0)
        column = f"factor_{int(factor)}"
        table[column] = np.maximum(np.nan_to_num(load, nan=0.0), floor)
        columns.append(column)
    write_text_atomic(path, table.to_csv(index=False, float_format="%.10g"))
    return crs_code(samples.crs), columns  # EPSG:4326, not its WKT, in config and report


def factor_config(
    config: Config, path: Path, crs: str, column: str, metal: str, title: str
) -> Config:
    """The single-metal style configuration that learns one factor's load from the imagery.

    Everything but the samples and the label is the several-metal run's own: the same
    imagery, land use, patches, models and folds. ``metal`` (the factor's main metal)
    only names files and model metadata; the rule is the factor's upper quartile.
    """
    single = config.for_metal(metal)
    data = single.model_dump()
    data["name"] = title
    data["samples"] = {
        "path": path,
        "x": "x",
        "y": "y",
        "crs": crs,
        "value": column,
        "id": "sample_id",
        "region": "region",
    }
    data["label"] = {"rule": "quantile", "q": FACTOR_QUANTILE}
    built = Config.model_validate(data)
    built._source = config.source
    return built
