"""The six regions of the synthetic city: land-use mix, sources and soil, as data.

Each :class:`RegionRecipe` is one Pearl-River-Delta-like district, modelled on
the kinds of area the paper's six regions of Dongguan were (an industrial town,
a city centre, a riverside paddy plain, hills with orchards, a peri-urban mix, a
coastal port). The recipe only holds parameters; the generators in
:mod:`~soilsource.synth.landscape`, :mod:`~soilsource.synth.spectra` and
:mod:`~soilsource.synth.cadmium` turn a recipe and a random generator into rasters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

PIXEL_M = 10.0
"""Ground sampling distance of every raster, metres (Sentinel-2 10 m bands)."""

CRS = "EPSG:32649"
"""WGS 84 / UTM zone 49N, the projected CRS of Dongguan."""

DEFAULT_SIZE_PX = 1000
"""Default side of a region in pixels: 10 km at 10 m."""

MIN_SIZE_PX = 64
MAX_SIZE_PX = 4096

BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")
"""Image bands, the Sentinel-2 B2, B3, B4, B8, B11, B12 (all resampled to 10 m)."""

REFLECTANCE_SCALE = 10000
"""Sentinel-2 L2A integer scaling: reflectance x 10000, no offset (pre-2022 baseline)."""

IMAGERY_NODATA = 0
LANDUSE_NODATA = 0


class LandUse(IntEnum):
    """Land-use codes of ``landuse/REGION.tif`` (0 is nodata)."""

    INDUSTRIAL = 1
    RESIDENTIAL = 2
    PADDY = 3
    DRY_FARMLAND_ORCHARD = 4
    FOREST = 5
    WATER = 6
    ROAD = 7
    GREEN_SPACE = 8

    @property
    def label(self) -> str:
        """The class name written to ``classes.csv`` (lower case, no spaces)."""
        return self.name.lower()


SOIL_CLASSES = (LandUse.PADDY, LandUse.DRY_FARMLAND_ORCHARD, LandUse.FOREST, LandUse.GREEN_SPACE)
"""Classes where a soil sample can be taken (not water, roads or roofs)."""

SAMPLING_WEIGHT = {
    LandUse.PADDY: 1.0,
    LandUse.DRY_FARMLAND_ORCHARD: 1.0,
    LandUse.GREEN_SPACE: 0.6,
    LandUse.FOREST: 0.2,
}
"""Relative sampling density per unit area: surveys of farmland soil sample farmland most."""


@dataclass(frozen=True)
class RegionRecipe:
    """Parameters of one region.

    Shares are of the parcel area (land between roads and rivers); dry farmland
    and orchards take what the other classes leave. Strengths are medians of
    lognormal distributions; the units are those of ``truth/sources.gpkg``.
    """

    name: str
    title: str
    description: str
    grid: tuple[int, int]
    # land use
    share: dict[str, float]
    n_towns: int
    town_radius_m: float
    n_industrial_zones: int
    industrial_radius_m: float
    industry_at: str  # "river" | "coast" | "edge" | "anywhere"
    villages_per_100km2: float
    hill_share: float
    river_width_m: float
    river_flow_deg: float  # direction the water flows to, degrees clockwise from north
    river_offset: float  # where the river crosses, as a share of the side (0.5 = middle)
    n_arterials: int
    expressway: bool
    coast: bool = False
    canals_per_km: float = 0.6
    # sources
    emitter_share: float = 0.3
    site_median_mgkg: float = 0.35
    stack_share: float = 0.2
    effluent_share: float = 0.3  # of the emitters within EFFLUENT_REACH_M of the river
    effluent_ugl: float = 1.5  # Cd all effluents together add to the river, ug/L
    wind_from_deg: tuple[float, float] = (45.0, 160.0)  # winter NE monsoon, summer SSE
    wind_weight: float = 0.65
    traffic: float = 1.0
    upstream_ugl: float = 1.0
    irrigation: float = 1.0
    # soil
    background_scale: float = 1.0
    geogenic_share: float = 0.05  # share of the area on Cd-rich parent material
    ph_base: float = 5.7
    n_samples: int = 300
    paddy_stage: dict[str, float] = field(
        default_factory=lambda: {"growing": 0.55, "flooded": 0.15, "mature": 0.2, "fallow": 0.1}
    )


REGIONS: tuple[RegionRecipe, ...] = (
    RegionRecipe(
        name="industrial_town",
        title="Industrial town",
        description=(
            "Dense small and medium factories around two town centres on a mid-sized river; "
            "many emitting sites, stacks and effluent."
        ),
        grid=(1, 0),
        share={
            "forest": 0.08,
            "industrial": 0.28,
            "residential": 0.16,
            "pond": 0.04,
            "paddy": 0.14,
            "green": 0.06,
        },
        n_towns=2,
        town_radius_m=2200,
        n_industrial_zones=4,
        industrial_radius_m=1700,
        industry_at="river",
        villages_per_100km2=5,
        hill_share=0.08,
        river_width_m=90,
        river_flow_deg=250,
        river_offset=0.45,
        n_arterials=4,
        expressway=True,
        emitter_share=0.25,
        site_median_mgkg=0.3,
        stack_share=0.15,
        effluent_share=0.3,
        traffic=1.0,
        upstream_ugl=0.8,
        background_scale=1.0,
        ph_base=5.6,
        n_samples=320,
    ),
    RegionRecipe(
        name="city_centre",
        title="City centre",
        description=(
            "Residential and commercial centre with a dense street grid and heavy traffic, "
            "a hill park, few factories at the edge."
        ),
        grid=(1, 1),
        share={
            "forest": 0.12,
            "industrial": 0.08,
            "residential": 0.38,
            "pond": 0.02,
            "paddy": 0.08,
            "green": 0.1,
        },
        n_towns=1,
        town_radius_m=4200,
        n_industrial_zones=2,
        industrial_radius_m=1200,
        industry_at="edge",
        villages_per_100km2=3,
        hill_share=0.12,
        river_width_m=120,
        river_flow_deg=200,
        river_offset=0.7,
        n_arterials=5,
        expressway=True,
        emitter_share=0.3,
        site_median_mgkg=0.25,
        stack_share=0.12,
        effluent_share=0.2,
        traffic=1.8,
        upstream_ugl=0.6,
        background_scale=1.0,
        ph_base=5.9,
        n_samples=260,
    ),
    RegionRecipe(
        name="river_paddies",
        title="Riverside paddies",
        description=(
            "A wide river plain of paddies, fish ponds and irrigation canals with villages; "
            "a few factories on the river discharge Cd that irrigation carries onto the fields."
        ),
        grid=(0, 1),
        share={
            "forest": 0.05,
            "industrial": 0.07,
            "residential": 0.08,
            "pond": 0.1,
            "paddy": 0.38,
            "green": 0.04,
        },
        n_towns=1,
        town_radius_m=1500,
        n_industrial_zones=2,
        industrial_radius_m=1100,
        industry_at="river",
        villages_per_100km2=9,
        hill_share=0.04,
        river_width_m=180,
        river_flow_deg=235,
        river_offset=0.5,
        n_arterials=3,
        expressway=False,
        canals_per_km=1.4,
        emitter_share=0.35,
        site_median_mgkg=0.25,
        stack_share=0.08,
        effluent_share=0.7,
        effluent_ugl=6.0,
        traffic=0.7,
        upstream_ugl=3.0,
        irrigation=1.3,
        background_scale=0.95,
        ph_base=5.5,
        n_samples=340,
    ),
    RegionRecipe(
        name="hill_orchards",
        title="Hills and orchards",
        description=(
            "Forested granite hills with litchi and longan orchards on the slopes and paddies "
            "in the valleys; one smelting and quarry cluster with tall stacks."
        ),
        grid=(0, 2),
        share={
            "forest": 0.34,
            "industrial": 0.06,
            "residential": 0.06,
            "pond": 0.02,
            "paddy": 0.1,
            "green": 0.03,
        },
        n_towns=1,
        town_radius_m=1300,
        n_industrial_zones=1,
        industrial_radius_m=1300,
        industry_at="anywhere",
        villages_per_100km2=6,
        hill_share=0.38,
        river_width_m=50,
        river_flow_deg=300,
        river_offset=0.35,
        n_arterials=3,
        expressway=False,
        canals_per_km=0.5,
        emitter_share=0.4,
        site_median_mgkg=0.3,
        stack_share=0.35,
        effluent_share=0.2,
        traffic=0.6,
        upstream_ugl=0.3,
        background_scale=0.95,
        geogenic_share=0.12,
        ph_base=5.2,
        n_samples=280,
    ),
    RegionRecipe(
        name="periurban_mix",
        title="Peri-urban mix",
        description=(
            "Where the city meets the countryside: villages turned into workshop clusters, "
            "paddies, orchards, ponds and new roads, all interleaved."
        ),
        grid=(1, 2),
        share={
            "forest": 0.1,
            "industrial": 0.15,
            "residential": 0.17,
            "pond": 0.05,
            "paddy": 0.18,
            "green": 0.06,
        },
        n_towns=2,
        town_radius_m=1600,
        n_industrial_zones=5,
        industrial_radius_m=900,
        industry_at="anywhere",
        villages_per_100km2=10,
        hill_share=0.1,
        river_width_m=70,
        river_flow_deg=220,
        river_offset=0.3,
        n_arterials=4,
        expressway=True,
        emitter_share=0.3,
        site_median_mgkg=0.3,
        stack_share=0.15,
        effluent_share=0.35,
        traffic=1.0,
        upstream_ugl=1.0,
        background_scale=1.0,
        ph_base=5.6,
        n_samples=300,
    ),
    RegionRecipe(
        name="coastal_port",
        title="Coastal port",
        description=(
            "Reclaimed land on the estuary: port, power plant and petrochemical industry with "
            "tall stacks, the onshore wind carries their plumes inland over aquaculture ponds "
            "and paddies; higher pH on the marine sediments."
        ),
        grid=(0, 0),
        share={
            "forest": 0.06,
            "industrial": 0.24,
            "residential": 0.12,
            "pond": 0.1,
            "paddy": 0.16,
            "green": 0.06,
        },
        n_towns=1,
        town_radius_m=1800,
        n_industrial_zones=3,
        industrial_radius_m=1600,
        industry_at="coast",
        villages_per_100km2=5,
        hill_share=0.06,
        river_width_m=140,
        river_flow_deg=260,
        river_offset=0.6,
        n_arterials=3,
        expressway=True,
        coast=True,
        emitter_share=0.22,
        site_median_mgkg=0.3,
        stack_share=0.25,
        effluent_share=0.2,
        wind_from_deg=(225.0, 160.0),  # onshore SW and SSE winds
        wind_weight=0.6,
        traffic=0.9,
        upstream_ugl=1.2,
        background_scale=1.15,
        ph_base=6.2,
        n_samples=300,
    ),
)
"""The six regions, in the order of their random streams (seed, index)."""
