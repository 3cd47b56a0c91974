"""The YAML configuration of a soilsource run, as validated pydantic models.

The schema is the one of ``SPEC.md``; every section except ``samples``, ``imagery``
and ``label`` has defaults, so the smallest useful configuration is::

    samples: {path: samples.csv, x: x, y: y, crs: "EPSG:28992", value: cadmium}
    imagery: {path: landsat.tif}
    label: {rule: threshold, threshold: 2.0}

:func:`load_config` reads the file with ``yaml.safe_load`` (no code runs while
loading), resolves relative paths from the file's directory, and turns every
problem (YAML syntax, unknown key, wrong type, missing key) into one
:class:`~soilsource.errors.InputError` that names the file and the dotted key,
e.g. ``config.yaml: key 'patch.size_m': must be greater than 0``. Whether the
files exist is checked by the readers in :mod:`soilsource.inputs`, which name the
missing file itself.
"""

from __future__ import annotations

import difflib
from os import PathLike
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from soilsource.errors import InputError

Metal = Literal["Cd", "Hg", "As", "Pb", "Cr", "Cu", "Ni", "Zn"]
REGION_PLACEHOLDER = "{region}"
DEFAULT_REGION = "all"
CSV_SUFFIXES = (".csv", ".txt", ".tsv")

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
CONTEXT_M = (250.0, 1000.0)
"""The context scales measured best on the synthetic city (``benchmarks/bench_context.py``);
``patch.context_m`` is off by default (docs/method.md says why)."""
Share = Annotated[float, Field(gt=0, lt=1)]


class _Section(BaseModel):
    """Base of every section: unknown keys are errors (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid")


class SamplesConfig(_Section):
    """Where the soil samples are and which columns hold what.

    ``x``, ``y`` and ``crs`` apply to CSV files only; vector files carry their own
    geometry and CRS (``crs`` then only fills in a missing one).
    """

    path: Path
    value: str | dict[str, str] = Field(
        description=(
            "Column with the measured concentration, mg/kg; with several metals a mapping "
            "metal -> column (e.g. {Cd: cd_mgkg, Pb: pb_mgkg})."
        )
    )
    x: str = "x"
    y: str = "y"
    crs: str | None = None
    region: str | None = None
    id: str | None = None
    ph: str | None = None
    paddy: str | None = None
    orchard: str | None = Field(
        default=None,
        description="Optional boolean column for orchards (果园): GB 15618 Cu row only.",
    )
    layer: str | None = Field(default=None, description="Layer of a multi-layer GeoPackage.")

    @field_validator("crs")
    @classmethod
    def _valid_crs(cls, value: str | None) -> str | None:
        return None if value is None else _check_crs(value)

    @model_validator(mode="after")
    def _csv_needs_crs(self) -> SamplesConfig:
        if is_csv(self.path) and self.crs is None:
            raise PydanticCustomError(
                "csv_crs", "CSV coordinates need a CRS, e.g. 'EPSG:4326'", {"key": "crs"}
            )
        return self


class ImageryConfig(_Section):
    """One raster, a list of rasters (scenes or tiles), or a ``{region}`` template."""

    path: Path | list[Path] = Field(description="File, list of files or '{region}' template.")

    @field_validator("path")
    @classmethod
    def _non_empty(cls, value: Path | list[Path]) -> Path | list[Path]:
        if isinstance(value, list) and not value:
            raise PydanticCustomError("empty", "needs at least one raster")
        if isinstance(value, list) and any(REGION_PLACEHOLDER in str(p) for p in value):
            raise PydanticCustomError(
                "template", "use either a list of files or one '{region}' template, not both"
            )
        return value

    @property
    def paths(self) -> list[Path]:
        """The configured paths as a list (templates unexpanded)."""
        return list(self.path) if isinstance(self.path, list) else [self.path]

    @property
    def is_template(self) -> bool:
        """True when the path is a per-region ``{region}`` template."""
        return not isinstance(self.path, list) and REGION_PLACEHOLDER in str(self.path)


class LanduseConfig(_Section):
    """Land use: a raster of integer codes, or a vector file with a class ``field``."""

    path: Path
    classes: Path | None = Field(default=None, description="CSV with columns code,name.")
    field: str | None = Field(default=None, description="Class field of a vector file.")
    band: int = Field(default=1, ge=1, description="Band of a land-use raster.")

    @property
    def is_template(self) -> bool:
        """True when the path is a per-region ``{region}`` template."""
        return REGION_PLACEHOLDER in str(self.path)


LabelRule = Literal["threshold", "gb15618", "background", "quantile"]
_RULE_KEYS: dict[str, tuple[str, ...]] = {
    "threshold": ("threshold",),
    "gb15618": (),
    "background": ("background", "factor"),
    "quantile": ("q",),
}


class LabelConfig(_Section):
    """When a sample counts as contaminated (positive): value strictly above the rule.

    - ``threshold``: above ``threshold`` mg/kg (required).
    - ``gb15618``: above the GB 15618-2018 risk screening value for ``metal`` at the
      sample's pH (and paddy / orchard land); needs ``samples.ph``.
    - ``background``: above ``factor`` x ``background`` mg/kg. ``background`` is
      required; ``factor`` defaults to 1.5, the factor of Müller's geoaccumulation
      index (Igeo > 0 means value > 1.5 x background).
    - ``quantile``: above the ``q``-quantile of all samples' values (default 0.75,
      the upper quartile), for data without an accepted limit.
    """

    rule: LabelRule
    threshold: PositiveFloat | dict[str, PositiveFloat] | None = Field(
        default=None,
        description=(
            "mg/kg; required by and only for rule `threshold`: one number, or a mapping "
            "metal -> value."
        ),
    )
    background: PositiveFloat | dict[str, PositiveFloat] | None = Field(
        default=None,
        description=(
            "Background value in mg/kg; required by and only for rule `background`: one "
            "number for one metal, a mapping metal -> value for several."
        ),
    )
    factor: PositiveFloat | None = None
    q: Share | None = None

    @model_validator(mode="after")
    def _keys_of_rule(self) -> LabelConfig:
        used = _RULE_KEYS[self.rule]
        for key in ("threshold", "background", "factor", "q"):
            if key not in used and getattr(self, key) is not None:
                raise PydanticCustomError(
                    "rule_key",
                    "not used by rule '{rule}' (it uses: {used})",
                    {"key": key, "rule": self.rule, "used": ", ".join(used) or "no other key"},
                )
        if self.rule == "threshold" and self.threshold is None:
            raise PydanticCustomError(
                "rule_key", "required by rule 'threshold' (mg/kg)", {"key": "threshold"}
            )
        if self.rule == "background" and self.background is None:
            raise PydanticCustomError(
                "rule_key", "required by rule 'background' (mg/kg)", {"key": "background"}
            )
        if self.rule == "background" and self.factor is None:
            self.factor = 1.5
        if self.rule == "quantile" and self.q is None:
            self.q = 0.75
        return self


class PatchConfig(_Section):
    """The square window around each sample that the network sees."""

    size_m: PositiveFloat = Field(
        default=1280.0, description="Side of the patch in metres (in the raster's CRS units)."
    )
    max_nodata_share: Share = Field(
        default=0.5,
        description="A sample whose patch has more nodata than this share is flagged.",
    )
    context_m: list[PositiveFloat] = Field(
        default_factory=list,
        max_length=4,
        description=(
            "Context bands: each imagery band smoothed by a Gaussian of each of these standard "
            "deviations (metres), given to every model beside the band itself, so that a "
            "patch also carries what lies around it (upwind industry, the river upstream); "
            "cached in $SOILSOURCE_CACHE. [] = none (the default). Measured with [250, 1000] "
            "(bench_context, 3 seeds): synthetic city SI-LICNet +0.11 AUC, forest +0.09; "
            "Meuse SI-LICNet -0.009, forest +0.031, and its sensitivity no longer ranks the "
            "often-flooded land first (docs/method.md). Try it where sources act beyond a "
            "patch."
        ),
    )

    @field_validator("context_m")
    @classmethod
    def _distinct_scales(cls, value: list[float]) -> list[float]:
        if len(set(value)) != len(value):
            raise ValueError("each scale once")
        return sorted(value)


class ExplainConfig(_Section):
    """Occlusion sensitivity settings."""

    window_m: PositiveFloat = 160.0
    stride_m: PositiveFloat = 40.0
    baseline: float = Field(
        default=0.0,
        allow_inf_nan=False,
        description=(
            "Value of occluded pixels after normalisation, with explain.occlude_with: mean "
            "(0 = the band mean)."
        ),
    )
    occlude_with: Literal["mean", "typical", "clean"] = Field(
        default="clean",
        description=(
            "What an occluding window is filled with: 'clean' (default), in turn each of the "
            "typical pixels of the clean samples' patches (below their own limit; k-means "
            "centres, explain.typical_k of them), the drops averaged with the pixels' shares "
            "as weights: what the prediction would be if the place looked like land where the "
            "soil was found clean (all samples' patches when fewer than 10 are clean); "
            "'typical', the same with every sample's patches; 'mean', the band means "
            "(explain.baseline). The mean hides nothing where a place already looks average "
            "and a lot where it looks unusual (water, bright roofs), whatever the network "
            "learned: on real Landsat imagery with planted emitters it made bright land a "
            "false driver (bench_planted). Synthetic source AUC: mean 0.800, typical 0.784, "
            "clean 0.820. Costs typical_k occlusions (docs/method.md)."
        ),
    )
    typical_k: int = Field(
        default=5,
        ge=1,
        le=32,
        description="Typical pixels of explain.occlude_with: typical or clean.",
    )
    occlude_context: bool = Field(
        default=True,
        description=(
            "Whether an occluding window also hides the context bands (patch.context_m), as "
            "Captum's Occlusion over every channel does. Off: a window hides only what the "
            "place itself looks like. Measured on the synthetic city: on, source-pixel AUC "
            "0.841; off, 0.576 (band-mean occlusion); on Meuse only off ranked the "
            "often-flooded land first "
            "(docs/method.md)."
        ),
    )
    hotspot_share: Share = Field(
        default=0.05, description="Top share of sensitivity that forms hotspots."
    )
    candidates: int = Field(
        default=20,
        ge=0,
        le=1000,
        description=(
            "Candidate source objects kept per region in candidates.gpkg (ranked by their "
            "attributed effect on the samples around them; 0 = none)."
        ),
    )
    max_samples: int | None = Field(
        default=2000,
        ge=1,
        description=(
            "Most samples per region whose patches are occluded (a subset stratified by "
            "label and CV fold, stated in metrics.json and the report); null = every sample. "
            "Occlusion grows with the samples; the region map does not need them all."
        ),
    )
    aggregation: Literal["exceedance", "mean", "relative"] = Field(
        default="exceedance",
        description=(
            "How the per-sample maps combine into the region map: 'exceedance' (default) "
            "weights each sample's map by how far its measured value exceeds its own limit "
            "(log ratio, 0 for clean samples), so the map shows what the network reads as "
            "the cause of the measured contamination (highest source-pixel AUC and land-use "
            "Spearman on the synthetic city, docs/method.md); 'mean' averages the maps as "
            "they are; 'relative' subtracts the expected map (the mean of all maps at each "
            "offset from the sample) first."
        ),
    )


Baseline = Literal["random_forest", "mobilenet_v3_small", "resnet18"]


class ModelConfig(_Section):
    """What the models learn, and which run beside SI-LICNet in the same harness."""

    baselines: list[Baseline] = Field(default_factory=lambda: list[Baseline](["random_forest"]))
    members: int = Field(
        default=3,
        ge=1,
        le=16,
        description=(
            "Independent networks inside SI-LICNet whose outputs are averaged (an ensemble "
            "in one module; dense maps and occlusion stay exact); training costs about "
            "members times one network."
        ),
    )
    target: Literal["value", "label"] = Field(
        default="value",
        description=(
            "value: learn the log concentration with a spread and apply the rule after "
            "(the probability of exceeding each sample's own limit); label: learn the 0/1 "
            "label of the rule directly."
        ),
    )
    sectors: Literal[1, 4] = Field(
        default=1,
        description=(
            "SI-LICNet's pooling: 1 = rings around the sample (how far a feature lies); 4 = "
            "each ring cut into quadrants (also which direction, for north-up imagery; "
            "pair it with train.augment: none)."
        ),
    )
    pretrain: bool = Field(
        default=True,
        description=(
            "Pretrain SI-LICNet's trunk self-supervised on the region's own unlabelled "
            "imagery (Tile2Vec-style neighbour triplets) before training on the samples; "
            "cached by an imagery fingerprint in $SOILSOURCE_CACHE (default "
            "~/.cache/soilsource). Measured: Meuse +0.016 AUC, synthetic city +0.006 "
            "(docs/method.md)."
        ),
    )
    pretrain_steps: int = Field(
        default=150,
        ge=1,
        le=100000,
        description=(
            "Optimiser steps of the pretraining (32 triplets each; 150 cost about 1.5 "
            "supervised fits of one network)."
        ),
    )


class MappingConfig(_Section):
    """Wall-to-wall maps: the area they are meant for, and pH for pH-dependent rules."""

    area: Path | None = Field(
        default=None,
        description=(
            "Raster whose valid pixels are the study area (e.g. the surveyed floodplain): the "
            "prediction area that kNNDM cross-validation matches; null = the imagery."
        ),
    )
    ph: Path | None = Field(
        default=None,
        description=(
            "pH raster for the maps under rule gb15618: each pixel's limits from its own pH "
            "(paddy and other land weighted by the region's paddy share); null = the region's "
            "sample-median pH. Any CRS and grid (resampled bilinearly onto the imagery)."
        ),
    )


class TrainConfig(_Section):
    """Training scope and cross-validation."""

    scope: Literal["region", "pooled"] = "region"
    folds: int = Field(default=5, ge=2)
    cv: Literal["knndm", "spatial", "buffered", "random"] = Field(
        default="knndm",
        description=(
            "Fold design: knndm (folds matched to the distances from the mapped area to the "
            "samples, Linnenbrink et al. 2024), spatial blocks, buffered blocks (no test "
            "patch overlaps a training patch) or random (optimistic)."
        ),
    )
    seed: int = 0
    block_m: PositiveFloat | None = Field(
        default=None,
        description="Side of the spatial CV blocks in metres; null = default_block_m().",
    )
    buffer_m: float = Field(
        default=0.0,
        ge=0.0,
        allow_inf_nan=False,
        description=(
            "Drop, per fold, training samples within this distance of a test sample; "
            "patch.size_m makes test and training patches disjoint (metrics.json reports "
            "overlap_share either way)."
        ),
    )
    max_epochs: int | None = Field(
        default=None, ge=1, description="Most epochs per torch model; null = training default."
    )
    patience: int | None = Field(
        default=None, ge=1, description="Early-stopping patience in epochs; null = default."
    )
    augment: Literal["dihedral", "none"] = Field(
        default="dihedral",
        description=(
            "Augmentation of the torch models' training patches: dihedral = random "
            "rotations and flips (direction-free models); none = keep the imagery's "
            "orientation (with model.sectors: 4)."
        ),
    )
    min_steps: int = Field(
        default=300,
        ge=0,
        description=(
            "Least optimiser steps per torch model: a small region trains more epochs than "
            "max_epochs until it reaches this many (about 75 epochs at 124 samples); 0 = "
            "exactly max_epochs."
        ),
    )

    def default_block_m(self, patch_size_m: float, extent_m: float) -> float:
        """Spatial CV block side when ``block_m`` is null.

        ``max(patch_size_m, extent_m / folds)``: at least one patch, so a test
        sample's patch is mostly outside the training blocks, and at most about
        ``folds`` blocks along the shorter side of the samples' extent
        (``extent_m``), so every fold gets whole blocks.

        >>> TrainConfig().default_block_m(960.0, 3120.0)
        960.0
        >>> TrainConfig(folds=4).default_block_m(1280.0, 20000.0)
        5000.0
        """
        if self.block_m is not None:
            return float(self.block_m)
        return float(max(patch_size_m, extent_m / self.folds))


class ReportConfig(_Section):
    """What the report draws besides the run's own layers."""

    reference: list[Path] = Field(
        default_factory=list,
        description=(
            "Vector files (GeoJSON, GeoPackage, Shapefile; any CRS) drawn as outlines on every "
            "map of the report, e.g. a river or the study area's boundary."
        ),
    )


class SourcesConfig(_Section):
    """Receptor-model source apportionment (positive matrix factorisation) over the metals.

    Runs when present, with at least 3 metals in ``metal``. Uncertainties follow the
    equations of EPA PMF 5.0 (Norris et al. 2014): ``5/6 x MDL`` at or below the
    detection limit (MDL), else ``sqrt((error_fraction x c)^2 + (0.5 x MDL)^2)``. A metal
    without a ``detection_limit`` gets half its smallest measured positive value as MDL,
    so no sample counts as below detection for it.
    """

    factors: Literal["auto"] | Annotated[int, Field(ge=1, le=12)] = Field(
        default="auto",
        description=(
            "Number of source factors; auto = chosen by Q / Q_expected and the stability "
            "of the factors over random starts."
        ),
    )
    detection_limit: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="Method detection limit per metal, mg/kg."
    )
    error_fraction: PositiveFloat | dict[str, PositiveFloat] = Field(
        default=0.1,
        description="Relative analytical error: one number, or a mapping metal -> value.",
    )
    starts: int = Field(default=10, ge=1, le=200, description="Random starts per factor count.")
    bootstrap: int = Field(
        default=50, ge=0, le=2000, description="Bootstrap resamples for profile uncertainty."
    )
    explain: bool = Field(
        default=True,
        description=(
            "Learn each factor's per-sample contribution from the imagery (a single-metal "
            "style run per factor under sources/factor_K/: maps, occlusion, land use, "
            "candidate sources)."
        ),
    )


DeviceName = Literal["auto", "cpu", "cuda"]
"""Where torch computes: ``auto`` (a CUDA GPU when there is one), ``cpu`` or ``cuda``."""


class ComputeConfig(_Section):
    """Where the work runs."""

    device: DeviceName = "auto"
    scheduler: str | None = Field(default=None, description="Dask scheduler address; null = local.")
    patch_cache_mb: int = Field(
        default=2048,
        ge=0,
        description=(
            "Most memory (MiB, and at most half the free memory) for patches kept after "
            "they are first read; beyond it patches are read from the imagery each time "
            "they are needed, so memory does not grow with the number of samples. "
            "Results are the same either way."
        ),
    )
    runs_at_once: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Runs of a several-metal run (one per metal and source factor) computed at the "
            "same time, each in its own process with its share of the cores; null = as many "
            "as the cores and the free memory allow (one on a GPU or with a scheduler). A "
            "run's results depend on the cores it gets (float sums follow torch's thread "
            "count), never on timing."
        ),
    )


class Config(_Section):
    """A whole soilsource configuration (see ``SPEC.md``)."""

    metal: Metal | list[Metal] = Field(
        default="Cd",
        description="The metal, or a list of metals: one analysis per metal under METAL/.",
    )
    name: str | None = Field(
        default=None,
        description=(
            "What the values are, for titles and legends (default: the metal); e.g. the "
            "source factor a run under sources/ learns."
        ),
    )
    samples: SamplesConfig
    imagery: ImageryConfig
    landuse: LanduseConfig | None = None
    label: LabelConfig
    patch: PatchConfig = Field(default_factory=PatchConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    mapping: MappingConfig = Field(default_factory=MappingConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    sources: SourcesConfig | None = None

    _source: Path | None = PrivateAttr(default=None)

    @field_validator("metal", mode="before")
    @classmethod
    def _metal_case(cls, value: Any) -> Any:
        # One readable line for a wrong metal, not one per member of the union.
        names = value if isinstance(value, list) else [value]
        if not names:
            raise PydanticCustomError("metals", "lists no metal")
        known = Metal.__args__  # type: ignore[attr-defined]
        for name in names:
            if _metal_name(name) not in known:
                raise PydanticCustomError(
                    "metals",
                    "got '{name}'; input should be {known}",
                    {
                        "name": str(name),
                        "known": ", ".join(f"'{m}'" for m in known[:-1]) + f" or '{known[-1]}'",
                    },
                )
        names = [_metal_name(v) for v in names]
        return names[0] if len(names) == 1 else names

    @model_validator(mode="after")
    def _per_metal_keys(self) -> Config:
        metals = self.metals
        if len(set(metals)) < len(metals):
            raise PydanticCustomError(
                "metals", "lists a metal twice: {metals}", {"key": "metal",
                                                            "metals": ", ".join(metals)}
            )  # fmt: skip
        self.samples.value = _per_metal(self.samples.value, metals, "samples.value", "column")
        if isinstance(self.label.threshold, dict):
            self.label.threshold = _per_metal(
                self.label.threshold, metals, "label.threshold", "value"
            )
        if self.label.background is not None:  # metals differ in background by orders
            self.label.background = _per_metal(
                self.label.background, metals, "label.background", "background"
            )
        if self.sources is not None:
            if len(metals) < 3:
                raise PydanticCustomError(
                    "sources",
                    "source apportionment needs at least 3 metals in 'metal' (given: {metals})",
                    {"key": "sources", "metals": ", ".join(metals)},
                )
            for key in ("detection_limit", "error_fraction"):
                given = getattr(self.sources, key)
                if isinstance(given, dict):
                    setattr(self.sources, key, _known_metals(given, metals, f"sources.{key}"))
        return self

    @property
    def metals(self) -> list[str]:
        """The metals of the run, in the order given (one for a single-metal run)."""
        return list(self.metal) if isinstance(self.metal, list) else [self.metal]

    @property
    def single_metal(self) -> str:
        """The metal of a single-metal run (``for_metal`` makes one of each metal)."""
        if self.several:
            raise ValueError(f"a several-metal configuration ({', '.join(self.metals)})")
        return self.metals[0]

    @property
    def several(self) -> bool:
        """True when the run covers several metals (one single-metal run per metal)."""
        return len(self.metals) > 1

    @property
    def title(self) -> str:
        """What the run's values are, for titles and legends: ``name`` or the metal."""
        return self.name or "-".join(self.metals)

    def value_column(self, metal: str) -> str:
        """The samples column with ``metal``'s measured concentration."""
        value = self.samples.value
        return value[metal] if isinstance(value, dict) else value

    def for_metal(self, metal: str) -> Config:
        """The single-metal configuration of ``metal`` within a several-metal one."""
        if metal not in self.metals:
            raise KeyError(metal)
        data = self.model_dump()
        data["metal"] = metal
        data["sources"] = None
        data["samples"]["value"] = self.value_column(metal)
        for key in ("threshold", "background"):
            given = getattr(self.label, key)
            if isinstance(given, dict):
                data["label"][key] = given[metal]
        single = Config.model_validate(data)
        single._source = self._source
        return single

    @model_validator(mode="after")
    def _window_fits_patch(self) -> Config:
        # An occluding window larger than the patch would hide the whole patch.
        if self.explain.window_m > self.patch.size_m:
            raise PydanticCustomError(
                "window",
                "{window} m is larger than the patch (patch.size_m = {patch} m)",
                {"key": "explain.window_m", "window": f"{self.explain.window_m:g}",
                 "patch": f"{self.patch.size_m:g}"},
            )  # fmt: skip
        return self

    @property
    def source(self) -> Path | None:
        """The configuration file this came from (None when built in Python)."""
        return self._source

    def to_yaml(self) -> str:
        """The resolved configuration as YAML (absolute paths), e.g. for a run directory."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _metal_name(value: Any) -> Any:
    """A metal name in the spelling of :data:`Metal` (``cd`` -> ``Cd``); others unchanged."""
    if isinstance(value, str):
        for metal in Metal.__args__:  # type: ignore[attr-defined]
            if metal.lower() == value.strip().lower():
                return metal
    return value


def _known_metals(given: dict[str, Any], metals: list[str], key: str) -> dict[str, Any]:
    """``given`` with its keys spelt as metals, every key one of ``metals``."""
    out = {}
    for name, value in given.items():
        metal = _metal_name(name)
        if metal not in metals:
            raise PydanticCustomError(
                "metals",
                "'{name}' is not one of the run's metals ({metals})",
                {"key": key, "name": str(name), "metals": ", ".join(metals)},
            )
        out[metal] = value
    return out


def _per_metal(given: Any, metals: list[str], key: str, what: str) -> Any:
    """A per-metal setting (one value or a mapping metal -> value) checked against ``metals``.

    One value serves a single metal; several metals need a mapping with every metal
    (one column cannot hold several metals). A one-metal mapping becomes the value.
    """
    if not isinstance(given, dict):
        if len(metals) > 1 and what in ("column", "background"):
            raise PydanticCustomError(
                "metals",
                "one {what} for {n} metals; give a mapping metal -> {what}, e.g. "
                "'{first}: {example}'",
                {"key": key, "n": len(metals), "first": metals[0], "what": what,
                 "example": f"{metals[0].lower()}_mgkg" if what == "column" else "0.2"},
            )  # fmt: skip
        return given
    known = _known_metals(given, metals, key)
    missing = [m for m in metals if m not in known]
    if missing:
        raise PydanticCustomError(
            "metals",
            "no {what} for {missing}",
            {"key": key, "what": what, "missing": ", ".join(missing)},
        )
    return known[metals[0]] if len(metals) == 1 else known


def is_csv(path: str | PathLike[str]) -> bool:
    """True when ``path`` is a delimited text file (read with coordinate columns)."""
    return Path(path).suffix.lower() in CSV_SUFFIXES


def load_config(path: str | PathLike[str]) -> Config:
    """Read, validate and resolve a configuration file.

    Parameters
    ----------
    path:
        The YAML file. Relative paths inside it are relative to its directory.

    Raises
    ------
    InputError
        The file is missing or unreadable, is not valid YAML (with the line), or a
        key is unknown, missing or of the wrong type (with the dotted key).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "", "file not found") from None
    except IsADirectoryError:
        raise InputError(path, "", "is a directory, not a YAML configuration file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, "", f"cannot read: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise InputError(path, where, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:  # e.g. a control character: the reader's first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, "", f"YAML syntax error: {first}") from None
    if not isinstance(raw, dict):
        raise InputError(path, "", "expected a mapping of keys (samples:, imagery:, label:, ...)")
    return config_from_dict(raw, base_dir=path.parent, source=path)


def config_from_dict(
    raw: dict[str, Any],
    base_dir: str | PathLike[str] = ".",
    source: str | PathLike[str] = "config",
) -> Config:
    """Validate a configuration given as a dict; relative paths resolve from ``base_dir``."""
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise _input_error(exc, source) from None
    base = Path(base_dir).resolve()
    config.samples.path = _resolve(base, config.samples.path)
    paths = config.imagery.path
    config.imagery.path = (
        [_resolve(base, p) for p in paths] if isinstance(paths, list) else _resolve(base, paths)
    )
    config.report.reference = [_resolve(base, p) for p in config.report.reference]
    for key in ("area", "ph"):
        if getattr(config.mapping, key) is not None:
            setattr(config.mapping, key, _resolve(base, getattr(config.mapping, key)))
    if config.landuse is not None:
        config.landuse.path = _resolve(base, config.landuse.path)
        if config.landuse.classes is not None:
            config.landuse.classes = _resolve(base, config.landuse.classes)
    config._source = Path(source)
    return config


def _resolve(base: Path, path: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else base / path


def _check_crs(value: str) -> str:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        CRS.from_user_input(value)
    except CRSError:
        raise PydanticCustomError(
            "crs", "'{value}' is not a CRS pyproj knows (e.g. EPSG:4326)", {"value": value}
        ) from None
    return value


def _input_error(exc: ValidationError, source: str | PathLike[str]) -> InputError:
    """The first validation error as one line: file, dotted key, what is wrong."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = _field_loc(first["loc"])
    # A mapping that fits a union's mapping member but for one entry: name the entry.
    deeper = [e for e in errors if _field_loc(e["loc"])[: len(loc)] == loc]
    first = max(deeper, key=lambda e: len(_field_loc(e["loc"])))
    loc = _field_loc(first["loc"])
    # A value that fits no member of a union (e.g. 'auto' or a number): one line that
    # says what each member wanted, not one error per member.
    union = [e for e in errors if _field_loc(e["loc"]) == loc and len(e["loc"]) > len(loc)]
    key = ""
    extra = (first.get("ctx") or {}).get("key")  # model-level checks name their key
    for part in (*loc, *([extra] if extra else [])):
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    if len(union) > 1:
        wanted = " or ".join(_wanted(e["msg"]) for e in union)
        more = len(errors) - len(union)
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        got = f"got {first['input']!r}; " if not isinstance(first["input"], dict) else ""
        return InputError(source, f"key '{key}'", f"{got}input should be {wanted}{tail}")
    kind = first["type"]
    if kind == "extra_forbidden":
        message = "unknown key" + _suggestion(first["loc"])
    elif kind == "missing":
        message = "required key is missing"
    elif kind in {"model_type", "dict_type"}:
        message = "expected a mapping of keys"
    else:
        message = first["msg"]
        if message[1:2].islower():  # pydantic's "Input should ..." reads on after the key
            message = message[:1].lower() + message[1:]
        if kind.startswith("literal_error"):
            message = f"got {first['input']!r}; {message}"
    more = len(errors) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return InputError(source, f"key '{key}'" if key else "", message)


def _wanted(message: str) -> str:
    """What one member of a union wanted, e.g. 'a valid string' from pydantic's message."""
    if message.startswith("Input is not a valid path"):
        return "a valid path"
    return message.removeprefix("Input should be ")


def _field_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``loc`` without pydantic's union-member tags (``literal['auto']``, ``constrained-int``).

    Our keys never hold ``[``, ``-`` or a bare type name, so those parts are tags.
    """
    tags = {"str", "int", "float", "bool", "dict", "list"}
    return tuple(
        part
        for part in loc
        if not (isinstance(part, str) and ("[" in part or "-" in part or part in tags))
    )


def _suggestion(loc: tuple[Any, ...]) -> str:
    """', did you mean ...?' for a misspelt key, from the model's known keys."""
    model: type[BaseModel] | None = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if model else None
        annotation = field.annotation if field else None
        model = _model_of(annotation)
    if model is None:
        return ""
    match = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f"; did you mean '{match[0]}'?" if match else ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
