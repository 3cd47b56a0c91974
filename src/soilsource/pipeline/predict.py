"""``soilsource predict``: a trained run's maps for new imagery (another area, another year).

A run saves, with its SI-LICNet of each scope (``models/SCOPE/silicnet.pt``), what the model
needs its imagery to be (:func:`~soilsource.inputs.imagery.imagery_record`: band names and
order, scales and offsets, pixel size) and how each region's maps were made (the rule's
limits, the texts of the maps' tags: :func:`~soilsource.pipeline.runner.map_record`).
:func:`predict` checks the run, its model and the new imagery against the first
(:func:`soilsource.pipeline.preflight.predict_plan`, the preflight ``check`` and ``run`` share)
before anything is written, then
writes the maps with the second, exactly as ``run`` does:

- ``OUT/probability/REGION.tif`` and ``OUT/concentration/REGION.tif`` (Cloud-Optimised
  GeoTIFFs with their QGIS styles, :mod:`soilsource.gisout`);
- ``OUT/applicability/REGION.tif``: the area of applicability on the new imagery, against
  the run's training samples and threshold (:func:`applicability_maps`); the report blanks
  the maps outside it, as ``run``'s does;
- ``OUT/report.html``: a short report (what was applied to what, and the maps);
- ``OUT/run.json``: ``"complete"`` only when every file is in place, with ``kind:
  predict``, the run, region and imagery.

On the run's own imagery the maps are the run's, value for value (``tests/test_predict.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import cast

from soilsource.data.context import context_of, with_context
from soilsource.data.patches import BandStats
from soilsource.inputs import RasterInfo
from soilsource.mapping.applicability import Applicability, write_applicability
from soilsource.mapping.probability import write_probability_map
from soilsource.models.modelio import SavedModel
from soilsource.models.silicnet import SILICNet
from soilsource.pipeline.preflight import predict_plan
from soilsource.pipeline.runner import MODEL, applicability_file, rule_of
from soilsource.report.document import write_predict_report
from soilsource.rundir import mark, prepare, safe_stem

__all__ = ["Prediction", "applicability_maps", "predict"]

FOLDERS = ("probability", "concentration", "applicability")
"""The map folders of a prediction, as in a run directory."""


@dataclass
class Prediction:
    """What :func:`predict` wrote: the output directory and its maps by folder."""

    out: Path
    run_dir: Path
    region: str
    imagery: Path
    maps: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def predict(
    run_dir: str | PathLike[str],
    imagery: str | PathLike[str],
    out: str | PathLike[str],
    *,
    region: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> Prediction:
    """Apply the SI-LICNet of a complete run to new imagery and write its maps to ``out``.

    Parameters
    ----------
    run_dir:
        A complete run directory (``soilsource run`` or ``demo``).
    imagery:
        One GeoTIFF with the bands of the training imagery, in the same order, with the
        same scales and offsets and pixel size (any CRS and extent).
    out:
        Directory to write (the rules of a run directory: a complete one is replaced
        only with ``force``, one of the user's is refused).
    region:
        Whose model and rule to apply; may be left out when the run has one region.

    Raises
    ------
    InputError
        Not a complete run, a run saved before its model files recorded their imagery,
        an unknown region, or imagery whose bands or pixel size differ from the
        training imagery (one line naming the band or property). Nothing is written.
    """
    run_dir, imagery = Path(run_dir), Path(imagery)
    found = predict_plan(run_dir, imagery, out, model=MODEL, region=region, force=force)
    config, region, saved, how, raster = (
        found.config, found.region, found.saved, found.how, found.raster
    )  # fmt: skip
    out = prepare(found.out, force=force)  # only now, when every check has passed
    raster = with_context(raster, context_of(found.record))  # the bands the model reads
    result = Prediction(out, run_dir, region, imagery)
    name = f"{safe_stem(region)}.tif"
    stats = BandStats.from_dict(saved.metadata["band_stats"])
    rule = rule_of(how, saved.link)
    result.maps["probability"] = write_probability_map(
        out / "probability" / name,
        cast(SILICNet, saved.model),  # predict_plan refuses any other model
        stats,
        raster,
        max_nodata_share=config.patch.max_nodata_share,
        rule=rule,
        concentration_path=out / "concentration" / name,
        rule_text=how["rule_text"],
        model_text=how["model_text"],
        progress=progress,
    )
    if rule is not None:
        result.maps["concentration"] = out / "concentration" / name
    result.notes += applicability_maps(
        result, raster, saved, stats, found.model_path, config.patch.max_nodata_share, how
    )
    write_predict_report(out, run_dir, region, imagery, result.notes)
    mark(
        out,
        "complete",
        kind="predict",
        run=str(run_dir.resolve()),
        region=region,
        imagery=str(imagery.resolve()),
        maps={k: str(p.relative_to(out)) for k, p in result.maps.items()},
    )
    return result


def applicability_maps(
    result: Prediction,
    raster: RasterInfo,
    saved: SavedModel,
    stats: BandStats,
    model_path: Path,
    max_nodata_share: float,
    how: dict,
) -> list[str]:
    """``applicability/REGION.tif`` on the new imagery: the dissimilarity index of its patches
    to the run's training samples of the region, with the run's threshold (Meyer & Pebesma
    2021, :mod:`soilsource.mapping.applicability`), from the training set the run kept beside
    its model file. New imagery is where the area of applicability matters most: another
    area or year can hold land the samples never saw.

    Returns the notes the report shows: none, or why there is no map (a run saved before
    soilsource kept its area of applicability).
    """
    kept = applicability_file(model_path, result.region)
    if not kept.is_file():
        return [
            "no applicability map: the run was saved before soilsource kept its area of "
            "applicability; run its configuration again to get one, and read the maps with "
            "care far from the training samples' imagery"
        ]
    name = f"{safe_stem(result.region)}.tif"
    result.maps["applicability"] = write_applicability(
        result.out / "applicability" / name,
        cast(SILICNet, saved.model),
        stats,
        raster,
        Applicability.load(kept),
        max_nodata_share=max_nodata_share,
        model_text=how["model_text"],
        rule_text=how["rule_text"],
    )
    return []
