"""Soil cadmium of a region: sources, their anthropogenic contribution, background, pH, samples.

Four pathways add Cd to the natural background, each with its own footprint:

- **industrial sites**: only some industrial parcels emit (``emitter_share``), with
  strengths spread over orders of magnitude (lognormal); the parcel itself and a
  ~100 m halo of spills and dust are enriched;
- **atmospheric deposition**: some emitters have stacks; their plumes follow the two
  monsoon winds and deposit over kilometres (an anisotropic kernel convolved with
  the stacks by FFT);
- **traffic**: tyre and brake wear along roads, by road class, decaying within
  ~50-150 m of the road edge;
- **irrigation**: emitters near the river discharge effluent; the river's Cd
  (upstream inflow plus effluents, decaying downstream) reaches paddies through
  canals and the nearest bank, so fields downstream of dischargers and near canals
  receive most.

The background is lognormal, with a median set by geology (granite hills low,
alluvium, marine sediments on the coast high) and spatially correlated
variation. pH is acidic, lower on paddies, near industry and under forest, higher
on marine sediments, with spatial structure. Samples are taken on soil only,
more densely on farmland, and measured with multiplicative lab noise and a
detection limit.

Besides the truth, a region gets what the generator expects from what is visible
(``Cadmium.expected_contribution``, ``background_median``): the same pathway code
(``contribution_pathways``) run on ``expected_emissions``, where every industrial
parcel emits at the expectation over which parcels emit and how much. Scored against
each sample's own limit, it gives the summary's ``visible_oracle_auc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy import ndimage, signal
from scipy.spatial import cKDTree
from scipy.stats import hypergeom, norm, rankdata
from sklearn.metrics import roc_auc_score

from soilsource.data.labels import exceeds, gb15618_screening_value
from soilsource.synth.fields import distance_m, nearest_index, smooth_noise, upsample_linear
from soilsource.synth.landscape import Landscape, RoadClass, WaterKind
from soilsource.synth.recipes import (
    CRS,
    PIXEL_M,
    SAMPLING_WEIGHT,
    SOIL_CLASSES,
    LandUse,
    RegionRecipe,
)

# Source strengths and footprints (documented in docs/synthetic_city.md).
SITE_SIGMA = 1.1  # lognormal sd of emitter strength: 90 % between /6 and x6 of the median
SITE_HALO_M = 110.0  # decay length of the enrichment around an emitting parcel
STACK_RATIO = 0.25  # median peak deposition of a stack relative to its site strength
STACK_SIGMA = 0.5  # lognormal sd of a stack's deposition around that median
PLUME_LENGTH_M = 2500.0  # deposition decay length downwind
PLUME_PEAK_M = 300.0  # deposition rises over this distance from the stack
PLUME_SIGMA0_M = 60.0  # crosswind spread at the stack ...
PLUME_SPREAD = 0.18  # ... growing by this much per metre downwind
PLUME_RADIUS_M = 10000.0  # kernel support; it tapers to 0 over the outer 30 %
PLUME_CELL_M = 40.0  # deposition is smooth: convolve on a 40 m grid, interpolate to 10 m
TRAFFIC_EDGE_MGKG = {
    RoadClass.EXPRESSWAY: 0.20,
    RoadClass.ARTERIAL: 0.14,
    RoadClass.COLLECTOR: 0.07,
    RoadClass.LOCAL: 0.025,
}
TRAFFIC_DECAY_M = 80.0
EFFLUENT_REACH_M = 1500.0  # emitters this close to the river may discharge into it
RIVER_DECAY_M = 8000.0  # dilution and settling of river Cd downstream
UPSTREAM_SIGMA = 0.3  # lognormal sd of the upstream inflow around the recipe's value
EFFLUENT_SIGMA = 0.5  # lognormal sd of a discharger's share beyond its site strength
IRRIGATION_MGKG_PER_UGL = 0.08  # paddy soil increment per ug/L of irrigation water
IRRIGATION_REACH_M = 700.0  # fields farther from canal or river get less water
UPLAND_IRRIGATION = 0.3  # dry farmland is watered less than paddies
FLOOD_REACH_M = 150.0  # river banks get sediment in floods

BACKGROUND_MEDIAN = {"granite": 0.09, "alluvium": 0.16, "marine": 0.22}  # mg/kg
BACKGROUND_SIGMA_SPATIAL = 0.3  # lognormal sd of the smooth part (~500 m) ...
BACKGROUND_SIGMA_NUGGET = 0.22  # ... and of the pixel-to-pixel part
GEOGENIC_FACTOR = 2.5  # Cd-rich parent material (black shale, limestone) multiplies the median

AUC_BAND = (0.78, 0.92)  # oracle AUC the calibration keeps each region in

LAB_CV = 0.12  # multiplicative lab noise (coefficient of variation)
DETECTION_LIMIT = 0.02  # mg/kg; values below are reported as DETECTION_LIMIT / 2
PH_LAB_SD = 0.05

SOURCE_UNITS = {
    "industrial_site": "mg/kg added on the parcel",
    "stack": "mg/kg added at the plume's peak",
    "effluent": "ug/L added to the river",
    "upstream_inflow": "ug/L in the river where it enters",
    "traffic": "mg/kg added at the road edge",
}
PATHWAYS = ("site", "atmospheric", "traffic", "irrigation")


@dataclass
class Cadmium:
    """Truth rasters and sources of one region."""

    contribution: np.ndarray  # float32, anthropogenic increment, mg/kg
    pathways: dict[str, np.ndarray]  # the contribution split by pathway
    background: np.ndarray  # float32, natural Cd, mg/kg
    ph: np.ndarray  # float32
    sources: gpd.GeoDataFrame  # region, type, strength, unit, geometry
    # What the generator expects from what is visible (see ``expected_emissions``):
    # the contribution with every industrial parcel at the expected emission, and the
    # median of the background given the visible geology.
    expected_contribution: np.ndarray | None = None  # float32, mg/kg
    background_median: np.ndarray | None = None  # float32, mg/kg

    def scaled(self, factor: float) -> Cadmium:
        """The same region with every source ``factor`` x as strong (all pathways are linear)."""
        if factor == 1.0:
            return self
        sources = self.sources.copy()
        sources["strength"] = (sources["strength"] * factor).round(4)
        expected = self.expected_contribution
        return Cadmium(
            (self.contribution * factor).astype(np.float32),
            {k: (v * factor).astype(np.float32) for k, v in self.pathways.items()},
            self.background,
            self.ph,
            sources,
            None if expected is None else (expected * factor).astype(np.float32),
            self.background_median,
        )


@dataclass
class Emissions:
    """What a region's sources emit: everything random that the four pathways' physics reads.

    ``build_cadmium`` draws one; ``expected_emissions`` gives its expectation over
    the draw of which industrial parcels emit and how much. ``contribution_pathways``
    turns either into rasters, so the truth and its expectation share one physics.
    """

    site: np.ndarray  # float32 per parcel id (0: no parcel): mg/kg added on the parcel
    stacks: list[tuple[shapely.Point, float]]  # stack and its peak deposition, mg/kg
    upstream: float  # ug/L in the river where it enters
    outfalls: np.ndarray  # position of each effluent along the river, m
    loads: np.ndarray  # ug/L each effluent adds to the river


def build_cadmium(land: Landscape, recipe: RegionRecipe, rng: np.random.Generator) -> Cadmium:
    """Place the sources of a region and compute contribution, background and pH."""
    parcels = land.parcels
    industrial = parcels.index[parcels["kind"] == "industrial"].to_numpy()
    n_emit = _n_emitters(recipe, len(industrial))
    emitters = np.sort(rng.choice(industrial, n_emit, replace=False))
    strength = recipe.site_median_mgkg * np.exp(rng.normal(0, SITE_SIGMA, n_emit))
    records: list[dict] = []

    # Industrial sites: the parcel and a halo around it.
    site_strength = np.zeros(len(parcels) + 1, np.float32)
    site_strength[emitters] = strength
    for pid, s in zip(emitters, strength, strict=True):
        records.append(
            {"type": "industrial_site", "strength": s, "geometry": parcels.geometry[pid]}
        )

    # Stacks: plumes along the two monsoon winds.
    has_stack = rng.random(n_emit) < recipe.stack_share
    if n_emit:
        has_stack[np.argmax(strength)] = True  # the biggest emitter always has one
    stacks = []
    points = _stack_points(land, emitters[has_stack])
    for point, s in zip(points, strength[has_stack], strict=True):
        q = s * STACK_RATIO * np.exp(rng.normal(0, STACK_SIGMA))
        stacks.append((point, q))
        records.append({"type": "stack", "strength": q, "geometry": point})

    # Traffic along roads.
    for cls in np.unique(land.roads["road_class"]):
        lines = land.roads.geometry[land.roads["road_class"] == cls].values
        records.append(
            {
                "type": "traffic",
                "strength": recipe.traffic * TRAFFIC_EDGE_MGKG[RoadClass(cls)],
                "geometry": shapely.multilinestrings(list(lines)),
                "detail": RoadClass(cls).name.lower(),
            }
        )

    # Irrigation: the river's Cd profile, effluents of emitters near the water.
    river = land.river
    upstream = recipe.upstream_ugl * np.exp(rng.normal(0, UPSTREAM_SIGMA))
    records.append(
        {
            "type": "upstream_inflow",
            "strength": upstream,
            "geometry": shapely.Point(river.coords[0]),
        }
    )
    d_parcel_river = shapely.distance(parcels.geometry[emitters].values, river)
    near = np.flatnonzero(d_parcel_river < EFFLUENT_REACH_M)
    n_eff = max(1, round(recipe.effluent_share * near.size)) if near.size else 0
    dischargers = np.sort(rng.choice(near, n_eff, replace=False)) if n_eff else near
    outfalls, loads = [], []
    # The recipe sets the total the effluents add; each discharger's share follows its size.
    share = strength[dischargers] * np.exp(rng.normal(0, EFFLUENT_SIGMA, dischargers.size))
    share = share / share.sum() if share.size else share
    for k, part in zip(dischargers, share, strict=True):
        load = recipe.effluent_ugl * part
        where = river.project(parcels.geometry[emitters[k]].centroid)
        outfalls.append(where)
        loads.append(load)
        records.append({"type": "effluent", "strength": load, "geometry": river.interpolate(where)})

    emissions = Emissions(site_strength, stacks, upstream, np.array(outfalls), np.array(loads))
    pathways = contribution_pathways(land, recipe, emissions)
    contribution = cast(np.ndarray, sum(pathways.values())).astype(np.float32)
    expected = sum(contribution_pathways(land, recipe, expected_emissions(land, recipe)).values())

    d_industry = distance_m(land.landuse == LandUse.INDUSTRIAL, PIXEL_M)
    background = _background(land, recipe, rng)
    ph = _ph(land, recipe, d_industry, rng)
    sources = gpd.GeoDataFrame(records, geometry="geometry", crs=CRS)
    sources.insert(0, "region", recipe.name)
    if "detail" not in sources:
        sources["detail"] = None
    sources["unit"] = sources["type"].map(SOURCE_UNITS)
    sources["strength"] = sources["strength"].astype(float).round(4)
    sources = sources[["region", "type", "detail", "strength", "unit", "geometry"]]
    return Cadmium(
        contribution,
        pathways,
        background,
        ph,
        sources,
        cast(np.ndarray, expected).astype(np.float32),
        background_median(land, recipe),
    )


def contribution_pathways(
    land: Landscape, recipe: RegionRecipe, emissions: Emissions
) -> dict[str, np.ndarray]:
    """The four pathways' contributions (float32 rasters, mg/kg) from what the sources emit."""
    shape = land.shape

    # Industrial sites: the parcel and a halo around the nearest emitting parcel.
    on_site = emissions.site[land.parcel_id]
    emit_mask = on_site > 0
    site = np.zeros(shape, np.float32)
    if emit_mask.any():  # (an emitting parcel can vanish under roads in tiny regions)
        d_site, ri, ci = nearest_index(emit_mask, PIXEL_M)
        site = on_site[ri, ci] * np.exp(-d_site / SITE_HALO_M)

    # Stacks: plumes along the two monsoon winds, convolved on a coarser grid.
    factor = int(PLUME_CELL_M // PIXEL_M)
    stacks = np.zeros((-(-shape[0] // factor), -(-shape[1] // factor)), np.float32)
    for point, q in emissions.stacks:
        r, c = _pixel(land, point.x, point.y)
        stacks[r // factor, c // factor] += q
    # Farther than the region's side, a plume cannot reach a pixel from a stack inside.
    reach = min(PLUME_RADIUS_M, max(shape) * PIXEL_M + PLUME_CELL_M)
    kernel = plume_kernel(recipe.wind_from_deg, recipe.wind_weight, PLUME_CELL_M, reach)
    deposition = np.maximum(signal.fftconvolve(stacks, kernel, mode="same"), 0.0)
    atmospheric = upsample_linear(deposition, factor, shape)

    # Traffic along roads.
    traffic = np.zeros(shape, np.float32)
    for cls, edge in TRAFFIC_EDGE_MGKG.items():
        mask = land.road_class == cls
        if mask.any():
            d = distance_m(mask, PIXEL_M)
            traffic += recipe.traffic * edge * np.exp(-d / TRAFFIC_DECAY_M)

    irrigation = _irrigation(land, emissions.upstream, emissions.outfalls, emissions.loads)
    return {
        "site": site.astype(np.float32),
        "atmospheric": atmospheric.astype(np.float32),
        "traffic": traffic.astype(np.float32),
        "irrigation": irrigation.astype(np.float32),
    }


def expected_emissions(land: Landscape, recipe: RegionRecipe) -> Emissions:
    """The expectation of what ``build_cadmium`` draws, given the landscape (what is visible).

    Which industrial parcels emit, how much, which have stacks and which discharge
    into the river cannot be seen; their expectation over that draw can. Every
    industrial parcel emits ``p`` x the mean strength (``p``: the share of industrial
    parcels that emit), has a stack of the expected deposition (the biggest emitter's
    forced stack included) and, within reach of the river, an effluent of the expected
    load. The upstream inflow is at its mean. Roads, river and canals are as drawn.
    Atmospheric and irrigation Cd are linear in these, so their rasters are the exact
    expectation; the site halo (from the nearest emitting parcel only) is not linear,
    so there it is the halo of the expected emissions.
    """
    parcels = land.parcels
    industrial = parcels.index[parcels["kind"] == "industrial"].to_numpy()
    n = len(industrial)
    n_emit = _n_emitters(recipe, n)
    p = n_emit / n if n else 0.0
    mean = recipe.site_median_mgkg * np.exp(0.5 * SITE_SIGMA**2)
    site = np.zeros(len(parcels) + 1, np.float32)
    site[industrial] = p * mean

    # Sum over emitters of strength x has_stack: stack_share of all, plus the biggest
    # emitter's strength when it drew none.
    if n_emit:
        biggest = recipe.site_median_mgkg * _mean_exp_max_normal(SITE_SIGMA, n_emit)
        with_stack = recipe.stack_share * mean + (1 - recipe.stack_share) * biggest / n_emit
    else:
        with_stack = 0.0
    q = p * with_stack * STACK_RATIO * np.exp(0.5 * STACK_SIGMA**2)
    stacks = [(point, q) for point in _stack_points(land, industrial)] if q > 0 else []

    # Effluents: whenever an emitter is near the river, the dischargers add
    # effluent_ugl in all, split evenly in expectation over the near industrial parcels.
    river = land.river
    d_river = shapely.distance(parcels.geometry[industrial].values, river)
    near = industrial[d_river < EFFLUENT_REACH_M]
    any_near = 1.0 - hypergeom(n, near.size, n_emit).pmf(0) if near.size and n_emit else 0.0
    outfalls = np.array([river.project(parcels.geometry[pid].centroid) for pid in near])
    loads = np.full(near.size, recipe.effluent_ugl * any_near / max(near.size, 1))
    upstream = recipe.upstream_ugl * np.exp(0.5 * UPSTREAM_SIGMA**2)
    return Emissions(site, stacks, float(upstream), outfalls, loads)


def _n_emitters(recipe: RegionRecipe, n_industrial: int) -> int:
    return min(n_industrial, max(2, round(recipe.emitter_share * n_industrial)))


def _mean_exp_max_normal(sigma: float, n: int) -> float:
    """E[exp(sigma x max of n standard normals)], by quadrature.

    >>> round(_mean_exp_max_normal(1.0, 1), 4) == round(float(np.exp(0.5)), 4)
    True
    """
    z = np.linspace(-12.0, 12.0, 24001)
    density = n * norm.pdf(z) * norm.cdf(z) ** (n - 1)
    return float(np.trapezoid(np.exp(sigma * z) * density, z))


@lru_cache(maxsize=8)
def plume_kernel(
    wind_from_deg: tuple[float, float],
    weight: float,
    pixel_m: float = PIXEL_M,
    radius_m: float = PLUME_RADIUS_M,
) -> np.ndarray:
    """Deposition around a unit stack: two wind directions plus a short isotropic part.

    The value is 1 at the peak; rows run south, columns east.

    >>> k = plume_kernel((0.0, 0.0), 1.0, pixel_m=100.0)  # wind from the north
    >>> c = k.shape[0] // 2
    >>> bool(k[c + 10, c] > 10 * k[c - 10, c])  # 1 km downwind (south) >> 1 km upwind
    True
    """
    radius = int(radius_m / pixel_m)
    dr, dc = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float32)
    east, north = dc * pixel_m, -dr * pixel_m
    kernel = np.zeros_like(east)
    for frm, w in zip(wind_from_deg, (weight, 1.0 - weight), strict=True):
        to = np.deg2rad(frm + 180.0)
        s = east * np.sin(to) + north * np.cos(to)  # downwind distance
        t = -east * np.cos(to) + north * np.sin(to)  # crosswind distance
        sd = PLUME_SIGMA0_M + PLUME_SPREAD * np.maximum(s, 0)
        downwind = (1 - np.exp(-np.maximum(s, 0) / PLUME_PEAK_M)) * np.exp(-s / PLUME_LENGTH_M)
        kernel += w * np.where(
            s > 0, downwind * np.exp(-0.5 * (t / sd) ** 2) * PLUME_SIGMA0_M / sd, 0
        )
    kernel /= kernel.max()
    r = np.hypot(east, north)
    kernel += 0.25 * np.exp(-r / 300.0)
    # Taper to zero at the edge: a truncated kernel would print its square outline.
    edge = np.clip((r - 0.7 * radius_m) / (0.3 * radius_m), 0.0, 1.0)
    kernel *= np.cos(0.5 * np.pi * edge) ** 2
    return (kernel / kernel.max()).astype(np.float32)


def _pixel(land: Landscape, x: float, y: float) -> tuple[int, int]:
    rows, cols = land.shape
    c = int(np.clip((x - land.transform.c) // PIXEL_M, 0, cols - 1))
    r = int(np.clip((land.transform.f - y) // PIXEL_M, 0, rows - 1))
    return r, c


def _stack_points(land: Landscape, pids: np.ndarray) -> list[shapely.Point]:
    """A stack stands by the largest shed of its parcel (the first of equals), or in the parcel."""
    sheds = land.buildings.geometry.values
    owner = land.buildings["parcel_id"].to_numpy()
    # Sheds by parcel, largest first, then in table order: the first of each parcel.
    order = np.lexsort((np.arange(len(sheds)), -shapely.area(sheds), owner))
    first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]] if len(order) else order
    largest = dict(zip(owner[first].tolist(), first.tolist(), strict=True))
    where = [sheds[largest[p]] if p in largest else land.parcels.geometry[p] for p in pids]
    return list(shapely.point_on_surface(np.array(where, dtype=object)))


def _irrigation(
    land: Landscape, upstream: float, outfalls: np.ndarray, loads: np.ndarray
) -> np.ndarray:
    """Cd added to fields by irrigation water and by flood sediment on the banks."""
    river = land.river
    wk = land.water_kind
    # Arc length along the river of every river pixel, then the water's Cd there.
    densified = shapely.segmentize(river, PIXEL_M)
    vertices = shapely.get_coordinates(densified)
    arc = np.r_[0.0, np.cumsum(np.hypot(*np.diff(vertices, axis=0).T))]
    water = np.zeros(land.shape, np.float32)

    def ugl(s: np.ndarray) -> np.ndarray:
        c = upstream * np.exp(-s / (3 * RIVER_DECAY_M))
        for where, load in zip(outfalls, loads, strict=True):
            c = c + np.where(s >= where, load * np.exp(-(s - where) / RIVER_DECAY_M), 0.0)
        return c

    rr, cc = np.nonzero(wk == WaterKind.RIVER)
    if rr.size:
        xs = land.transform.c + (cc + 0.5) * PIXEL_M
        ys = land.transform.f - (rr + 0.5) * PIXEL_M
        _, nearest = cKDTree(vertices).query(np.c_[xs, ys])
        water[rr, cc] = ugl(arc[nearest])
    if len(land.canals):
        canal_ugl = np.r_[0.0, ugl(land.canals["offtake_m"].to_numpy())].astype(np.float32)
        on_canal = land.canal_id > 0
        water[on_canal] = canal_ugl[land.canal_id[on_canal]]
    source = (wk == WaterKind.RIVER) | (wk == WaterKind.CANAL)
    if not source.any():
        return np.zeros(land.shape, np.float32)
    d, ri, ci = nearest_index(source, PIXEL_M)
    supplied = water[ri, ci] * np.exp(-d / IRRIGATION_REACH_M)
    lu = land.landuse
    field = IRRIGATION_MGKG_PER_UGL * supplied
    field = np.where(
        lu == LandUse.PADDY,
        field,
        np.where(lu == LandUse.DRY_FARMLAND_ORCHARD, UPLAND_IRRIGATION * field, 0.0),
    )
    # A field is irrigated as a whole: average per parcel.
    pid = land.parcel_id
    farmed = (lu == LandUse.PADDY) | (lu == LandUse.DRY_FARMLAND_ORCHARD)
    sums = np.bincount(pid[farmed], weights=field[farmed], minlength=len(land.parcels) + 1)
    counts = np.bincount(pid[farmed], minlength=len(land.parcels) + 1)
    per_parcel = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    field = np.where(farmed & (pid > 0), per_parcel[pid], field)
    # Floods leave contaminated sediment on the banks.
    d_river = distance_m(wk == WaterKind.RIVER, PIXEL_M)
    near = (wk == WaterKind.RIVER) | (d_river < 5 * FLOOD_REACH_M)
    flood = np.zeros(land.shape, np.float32)
    flood[near] = (
        0.5
        * IRRIGATION_MGKG_PER_UGL
        * water[ri[near], ci[near]]
        * np.exp(-d_river[near] / FLOOD_REACH_M)
    )
    return (field + flood).astype(np.float32)


def _background(land: Landscape, recipe: RegionRecipe, rng: np.random.Generator) -> np.ndarray:
    """Natural Cd: lognormal around a geology-dependent median, spatially correlated."""
    median = _geology_median(land)
    # Patches of Cd-rich parent material, unrelated to any source: the natural
    # exceedances that make source attribution hard.
    anomaly = smooth_noise(rng, land.shape, 60.0)
    rich = anomaly > np.quantile(anomaly, 1.0 - recipe.geogenic_share)
    median = np.where(rich, median * GEOGENIC_FACTOR, median)
    log_median = _blurred_log(median)
    log_bg = (
        log_median
        + np.log(recipe.background_scale)
        + BACKGROUND_SIGMA_SPATIAL * smooth_noise(rng, land.shape, 50.0)
        + BACKGROUND_SIGMA_NUGGET * rng.standard_normal(land.shape, dtype=np.float32)
    )
    return np.exp(log_bg).astype(np.float32)


def background_median(land: Landscape, recipe: RegionRecipe) -> np.ndarray:
    """Median of the background given what is visible (float32, mg/kg).

    The geology (granite hills, alluvium, marine sediments) shows; where the Cd-rich
    parent material lies does not: it enters at its expectation in log units, which,
    with the zero-mean spatial variation and nugget, makes this the median of the
    lognormal that ``_background`` draws from.
    """
    log_median = (
        _blurred_log(_geology_median(land))
        + recipe.geogenic_share * np.log(GEOGENIC_FACTOR)
        + np.log(recipe.background_scale)
    )
    return np.exp(log_median).astype(np.float32)


def _geology_median(land: Landscape) -> np.ndarray:
    """Background median by geology: granite hills low, alluvium, marine sediments high."""
    hills = land.dem > 25.0
    marine = np.zeros(land.shape, bool)
    if land.sea is not None:
        marine = distance_m(land.water_kind == WaterKind.SEA, PIXEL_M) < 3000.0 * land.zone
    return np.where(
        hills,
        BACKGROUND_MEDIAN["granite"],
        np.where(marine, BACKGROUND_MEDIAN["marine"], BACKGROUND_MEDIAN["alluvium"]),
    )


def _blurred_log(median: np.ndarray) -> np.ndarray:
    """Geology boundaries are not sharp: the log median blurred over ~200 m."""
    return ndimage.gaussian_filter(np.log(median), 20.0, mode="nearest")


def _ph(
    land: Landscape, recipe: RegionRecipe, d_industry: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Soil pH: acidic (PRD), lower on paddies, near industry and under forest."""
    lu = land.landuse
    ph = (
        recipe.ph_base
        + 0.45 * smooth_noise(rng, land.shape, 150.0)
        + 0.25 * smooth_noise(rng, land.shape, 30.0)
        + 0.12 * rng.standard_normal(land.shape, dtype=np.float32)
        - 0.35 * (lu == LandUse.PADDY)
        - 0.3 * (lu == LandUse.FOREST)
        - 0.5 * np.exp(-d_industry / 800.0)
    )
    if land.sea is not None:
        d_sea = distance_m(land.water_kind == WaterKind.SEA, PIXEL_M)
        ph += 1.2 * np.exp(-d_sea / (2000.0 * land.zone))
    return np.clip(ph, 3.9, 8.4).astype(np.float32)


# --------------------------------------------------------------------------- samples


def n_samples(recipe: RegionRecipe, size_px: int, default_size_px: int) -> int:
    """Samples in a region: the recipe's count at the default size, at least 60.

    The count scales with the side, not the area, so small test regions still
    have enough samples for both classes of label.

    >>> from soilsource.synth.recipes import REGIONS
    >>> n_samples(REGIONS[0], 1000, 1000), n_samples(REGIONS[0], 128, 1000)
    (320, 60)
    """
    return max(60, round(recipe.n_samples * size_px / default_size_px))


def draw_samples(land: Landscape, cad: Cadmium, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Soil samples: where a survey would take them, with their truth and lab noise.

    Returns one row per sample with UTM ``x``, ``y``, ``landuse`` (code),
    ``background`` and ``contribution`` (mg/kg, truth), the reported ``ph``,
    ``is_paddy``, and ``lab_factor``, the multiplicative lab error that
    :func:`measure` applies.
    """
    lu = land.landuse
    soil = np.isin(lu, [int(c) for c in SOIL_CLASSES])
    # Away from the class edge, so the sample is in the field, not on the road verge.
    interior = ndimage.binary_erosion(soil, iterations=1, border_value=0)
    interior &= land.building_id == 0
    weight = np.zeros(lu.shape, np.float64)
    for cls, w in SAMPLING_WEIGHT.items():
        weight[(lu == cls) & interior] = w
    flat = weight.ravel()
    size = min(8 * n, int((flat > 0).sum()))
    cand = rng.choice(flat.size, size=size, replace=False, p=flat / flat.sum())
    spacing = 0.5 * PIXEL_M * np.sqrt(interior.sum() / n)
    keep = _thin(cand, lu.shape[1], spacing / PIXEL_M, n)
    rows, cols = np.divmod(cand[keep], lu.shape[1])
    jitter = rng.uniform(-3.0, 3.0, (2, rows.size))  # metres, inside the pixel
    sd = np.sqrt(np.log1p(LAB_CV**2))
    return pd.DataFrame(
        {
            "x": land.transform.c + (cols + 0.5) * PIXEL_M + jitter[0],
            "y": land.transform.f - (rows + 0.5) * PIXEL_M + jitter[1],
            "row": rows,
            "col": cols,
            "landuse": lu[rows, cols],
            "background": cad.background[rows, cols].astype(float),
            "contribution": cad.contribution[rows, cols].astype(float),
            "ph": np.round(cad.ph[rows, cols] + rng.normal(0, PH_LAB_SD, rows.size), 2),
            "is_paddy": lu[rows, cols] == LandUse.PADDY,
            "lab_factor": np.exp(rng.normal(-0.5 * sd**2, sd, rows.size)),
        }
    )


def measure(samples: pd.DataFrame, scale: float = 1.0) -> pd.DataFrame:
    """What the lab reports, and the label, when the sources are ``scale`` x as strong.

    Adds ``true_cd`` (background + contribution), ``cd_mgkg`` (x lab error,
    rounded to 0.001 mg/kg; below the detection limit reported as half of it),
    ``screening_value`` (GB 15618-2018 at the reported pH) and ``label``.
    """
    out = samples.copy()
    out["contribution"] = samples["contribution"] * scale
    out["true_cd"] = out["background"] + out["contribution"]
    out["cd_mgkg"] = _reported(out["true_cd"].to_numpy(), samples["lab_factor"].to_numpy())
    limit = gb15618_screening_value("Cd", out["ph"].to_numpy(), out["is_paddy"].to_numpy())
    out["screening_value"] = limit
    out["label"] = exceeds(out["cd_mgkg"].to_numpy(), limit)
    return out


def _reported(true_cd: np.ndarray, lab_factor: np.ndarray) -> np.ndarray:
    cd = np.round(true_cd * lab_factor, 3)
    return np.where(cd < DETECTION_LIMIT, DETECTION_LIMIT / 2, cd)


def oracle_auc(measured: pd.DataFrame, score: np.ndarray | None = None) -> float | None:
    """ROC AUC of the true contribution at the samples against their labels (None: one class).

    ``score``, when given, replaces the true contribution (see ``own_limit_score``).
    """
    labels = measured["label"].to_numpy()
    if labels.all() or not labels.any():
        return None
    if score is None:
        score = measured["contribution"].to_numpy()
    return float(roc_auc_score(labels, score))


def own_limit_score(
    measured: pd.DataFrame, contribution: str = "expected_contribution"
) -> np.ndarray:
    """Expected log Cd of each sample relative to its own limit: the score of the oracles
    that, as a concentration model, compare a prediction with each sample's limit.

    log(background median + contribution) - log(screening value), with the limit at
    the sample's reported pH and paddy status (both in samples.csv) and the
    ``background_median`` column that ``soilsource.synth.city.build_region`` adds.
    ``contribution`` is a column: ``expected_contribution`` (what the generator
    expects from what is visible: ``visible_oracle_auc``) or ``contribution`` (the
    truth: ``oracle_own_limit_auc``).

    >>> frame = pd.DataFrame({"background_median": [0.2, 0.2], "screening_value": [0.3, 0.6],
    ...                       "expected_contribution": [0.1, 0.1]})
    >>> np.round(own_limit_score(frame), 3).tolist()  # same Cd, the second limit is higher
    [0.0, -0.693]
    """
    cd = measured["background_median"] + measured[contribution]
    return np.log(cd.to_numpy()) - np.log(measured["screening_value"].to_numpy())


def calibrate_scale(samples: pd.DataFrame, band: tuple[float, float] = AUC_BAND) -> float:
    """The factor on all source strengths that puts the oracle AUC inside ``band``.

    1.0 when it already is and both labels have at least 10 % of the samples (the
    usual case at the default size: the recipes are tuned for it). Otherwise the
    factor nearest to 1 on a log grid from 1/20 to 20 that does; failing that, the
    one whose AUC is nearest to the band. Stronger sources make the labels follow
    the contribution (AUC up), weaker ones leave them to the background (AUC
    down). The lab errors stay fixed, so the answer is deterministic.
    """
    lo, hi = band
    least = max(5, int(np.ceil(0.1 * len(samples))))
    background = samples["background"].to_numpy()
    contribution = samples["contribution"].to_numpy()
    lab = samples["lab_factor"].to_numpy()
    limit = gb15618_screening_value("Cd", samples["ph"].to_numpy(), samples["is_paddy"].to_numpy())
    # The AUC of a score depends only on its ranks: one ranking serves every scale.
    ranks = rankdata(contribution)

    def miss(scale: float) -> float:
        labels = exceeds(_reported(background + scale * contribution, lab), limit)
        n_pos = int(labels.sum())
        n_neg = labels.size - n_pos
        if min(n_pos, n_neg) < least:
            return np.inf
        auc = (ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        return max(lo - auc, auc - hi, 0.0)

    if miss(1.0) == 0.0:
        return 1.0
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 61))
    grid = grid[np.argsort(np.abs(np.log(grid)), kind="stable")]  # nearest to 1 first
    misses = np.array([miss(float(g)) for g in grid])
    return float(grid[int(np.argmin(misses))])


def _thin(flat_index: np.ndarray, cols: int, spacing_px: float, n: int) -> np.ndarray:
    """Greedy thinning: keep candidates (in order) at least ``spacing_px`` apart, at most n."""
    rows, cs = np.divmod(flat_index, cols)
    xy = np.c_[cs, rows].astype(float)
    kept: list[int] = []
    tree_pts = np.empty((0, 2))
    for i in range(xy.shape[0]):
        if len(kept) == n:
            break
        if tree_pts.shape[0] and np.min(np.sum((tree_pts - xy[i]) ** 2, axis=1)) < spacing_px**2:
            continue
        kept.append(i)
        tree_pts = np.vstack([tree_pts, xy[i]])
    if len(kept) < n:  # crowded: fill up with the nearest-to-spacing leftovers
        rest = np.setdiff1d(np.arange(xy.shape[0]), kept)[: n - len(kept)]
        kept.extend(rest.tolist())
    return np.sort(np.array(kept, dtype=int))
