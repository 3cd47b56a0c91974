"""Write ``docs/configuration.md``: every configuration key, from the pydantic models.

Run ``python docs/make_configuration.py`` after changing ``src/soilsource/config.py``;
``tests/test_docs.py`` fails while the page and the models disagree. A key's meaning comes
from its ``Field(description=...)``; keys without one take theirs from :data:`MEANINGS`
below, and a key with neither is an error, so no key goes undocumented.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Lt
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from soilsource.config import Config

PAGE = Path(__file__).resolve().parent / "configuration.md"
PACKAGED = Path(__file__).resolve().parents[1] / "src" / "soilsource" / "configuration.md"
"""The same page inside the package, so an installed wheel carries the reference."""

MEANINGS = {
    "sources": "Source apportionment (positive matrix factorisation, EPA PMF 5.0 "
    "uncertainties) over at least 3 metals; absent = none.",
    "samples": "Where the soil samples are and which columns hold what.",
    "samples.path": "Samples file: CSV (or .txt/.tsv), GeoPackage, GeoJSON or Shapefile.",
    "samples.x": "CSV column of the x coordinate (longitude for EPSG:4326); CSV only.",
    "samples.y": "CSV column of the y coordinate (latitude for EPSG:4326); CSV only.",
    "samples.crs": "CRS of the CSV coordinates, e.g. `EPSG:4326` (required for CSV); "
    "for vector files only used when the file has none.",
    "samples.region": "Column with the region name; all samples form one region `all` when absent.",
    "samples.id": "Column with a sample id; row numbers when absent.",
    "samples.ph": "Column with soil pH; needed by rule `gb15618`.",
    "samples.paddy": "Boolean column: paddy field (rice), for rule `gb15618`.",
    "imagery": "The rasters that patches are cut from (any CRS; bands named by their "
    "descriptions).",
    "landuse": "Optional land-use map, for the ranking of land-use classes and the "
    "hotspots' dominant class.",
    "landuse.path": "Raster of integer codes, or a vector file with `field`; may use `{region}`.",
    "label": "When a sample counts as contaminated: its value strictly above the rule.",
    "label.rule": "`threshold` (mg/kg), `gb15618` (China's pH-dependent risk screening "
    "values), `background` (factor x background) or `quantile` (of all samples).",
    "label.factor": "Multiple of `background`; rule `background` only, default 1.5 "
    "(Müller's geoaccumulation index: Igeo > 0).",
    "label.q": "Quantile of all samples' values; rule `quantile` only, default 0.75.",
    "patch": "The square window around each sample that the network sees.",
    "explain": "Occlusion sensitivity: the window hidden from the network and its step.",
    "explain.window_m": "Side of the occluding window in metres (rounded to whole pixels); "
    "at most `patch.size_m`.",
    "explain.stride_m": "Step of the occluding window in metres (rounded to whole pixels).",
    "model": "What the models learn, and the models that run beside SI-LICNet in the same "
    "harness, on the same folds.",
    "mapping": "Wall-to-wall maps: the study area they are meant for.",
    "report": "What the report draws besides the run's own layers (reference outlines).",
    "model.baselines": "Any of `random_forest` (window statistics), `mobilenet_v3_small`, "
    "`resnet18`; `[]` for none.",
    "train": "Training scope and cross-validation.",
    "train.scope": "`region`: one model per region (as in the paper); `pooled`: one model "
    "for all regions.",
    "train.folds": "Number of cross-validation folds.",
    "train.seed": "Seed of folds, initialisation and training: the same seed gives the same run.",
    "compute": "Where the work runs.",
    "compute.device": "`auto` (CUDA when available), `cpu` or `cuda`.",
}


def _type(annotation: Any) -> str:
    """A short, readable type: ``number > 0``, ``one of: a, b``, ``path or list of paths``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of: " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return text + (" or null" if type(None) in args else "")
    if origin is typing.Annotated:
        base, *meta = args
        return _type(base) + _bounds(
            [x for info in meta for x in getattr(info, "metadata", [info])]
        )
    if origin is list:
        inner = _type(args[0])
        return (
            f"list of: {inner.removeprefix('one of: ')}"
            if "one of" in inner
            else f"list of {inner}s"
        )
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return {float: "number", int: "integer", str: "text", bool: "boolean", Path: "path"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _bounds(metadata: list[Any]) -> str:
    """`` > 0``, `` >= 1`` or `` in (0, 1)`` from annotated-types bounds."""
    low = next((f"{m.gt}" for m in metadata if isinstance(m, Gt)), None)
    at_least = next((f"{m.ge}" for m in metadata if isinstance(m, Ge)), None)
    high = next((f"{m.lt}" for m in metadata if isinstance(m, Lt)), None)
    if low is not None and high is not None:
        return f" in ({low}, {high})"
    if low is not None:
        return f" > {low}"
    if at_least is not None:
        return f" >= {at_least}"
    return f" < {high}" if high is not None else ""


def _kind(field: Any) -> str:
    """Type of a field with its bounds before any "or null"."""
    text = _type(field.annotation)
    bounds = _bounds(list(field.metadata))
    if text.endswith(" or null"):
        return text.removesuffix(" or null") + bounds + " or null"
    return text + bounds


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
        return "(section defaults)" if isinstance(value, BaseModel) else f"`{value}`"
    if field.default is None or field.default is PydanticUndefined:
        return "null"
    return f"`{field.default}`"


def rows(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) of every key, sections before their keys.

    Raises
    ------
    ValueError
        A key has no description in the model and none in :data:`MEANINGS`.
    """
    from soilsource.config import _model_of

    out = []
    for name, field in model.model_fields.items():
        key = prefix + name
        meaning = field.description or MEANINGS.get(key)
        if not meaning:
            raise ValueError(f"configuration key '{key}' has no description")
        sub = _model_of(field.annotation)
        kind = "section" if sub else _kind(field)
        if sub and type(None) in typing.get_args(field.annotation):
            kind = "section or null"
        out.append((key, kind, _default(field), meaning.replace("|", "\\|")))
        if sub is not None:
            out += rows(sub, key + ".")
    return out


def markdown() -> str:
    """The whole page."""
    lines = [
        "# Configuration reference",
        "",
        "A run is described by one YAML file (`soilsource run CONFIG --out DIR`). Relative",
        "paths are relative to the file; unknown keys are errors (with a suggestion for a",
        "misspelt one); everything but `samples`, `imagery` and `label` has defaults. The",
        "run directory's `config.yaml` is the resolved configuration: absolute paths, every",
        "default filled in. `imagery.path` and `landuse.path` may contain `{region}`, replaced",
        "by each region's name. Examples: `examples/meuse/config.yaml` and the synthetic",
        "city's `config.yaml` (written by `soilsource synth`).",
        "",
        "Generated from the pydantic models in `src/soilsource/config.py` by",
        "`python docs/make_configuration.py`; do not edit by hand.",
        "",
        "| key | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for key, kind, default, meaning in rows():
        lines.append(f"| `{key}` | {kind} | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    for page in (PAGE, PACKAGED):
        page.write_text(markdown(), encoding="utf-8")
        print(f"wrote {page}", file=sys.stderr)
