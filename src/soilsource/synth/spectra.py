"""Sentinel-2-like surface reflectance of a region, from its landscape.

Every pixel is a mix of two surface materials (e.g. a roof over a yard, rice
over flooded soil, canopy over bare soil) with a cover fraction; materials have
typical Sentinel-2 L2A reflectances. Land-use classes are visible in the image
only as they are in real imagery: through mixtures of shared materials, not as
class colours. Industrial and residential roofs share concrete, metal and dark
materials (industrial land has more large metal sheds, residential land finer
texture and more trees), greenhouses are as bright as white sheds, vacant lots
and fallow fields are as bare as factory yards. On top: per-parcel and
per-building brightness, texture, terrain shading, a hazy atmosphere residual,
the sensor's point spread function (mixed pixels at edges) and sensor noise.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from scipy import ndimage

from soilsource.synth.fields import distance_m, smooth_noise
from soilsource.synth.landscape import Landscape, RoadClass, WaterKind
from soilsource.synth.recipes import BANDS, PIXEL_M, REFLECTANCE_SCALE, LandUse, RegionRecipe


class Material(IntEnum):
    """Surface materials; :data:`REFLECTANCE` holds their spectra."""

    WATER_TURBID = 0
    WATER_POND = 1
    WATER_SEA = 2
    FOREST = 3
    RICE = 4
    PADDY_FLOODED = 5
    RICE_RIPE = 6
    ORCHARD = 7
    CROP = 8
    BARE_SOIL = 9
    GRASS = 10
    TREE = 11
    CONCRETE = 12
    ASPHALT = 13
    METAL_BLUE = 14
    METAL_WHITE = 15
    METAL_GREY = 16
    TILE_RED = 17
    ROOF_DARK = 18
    PLASTIC_FILM = 19


# Surface reflectance (0-1) in blue, green, red, nir, swir1, swir2 (S2 B2, B3, B4, B8, B11,
# B12). Typical values of Sentinel-2 L2A over the Pearl River Delta: turbid rivers, algal
# ponds, evergreen forest, red lateritic soil, blue-coated steel factory roofs.
REFLECTANCE = np.array(
    [
        [0.070, 0.085, 0.075, 0.040, 0.012, 0.008],  # turbid river
        [0.045, 0.075, 0.050, 0.045, 0.010, 0.007],  # algal fish pond
        [0.060, 0.070, 0.050, 0.025, 0.008, 0.006],  # estuary
        [0.022, 0.045, 0.025, 0.300, 0.140, 0.060],  # evergreen forest
        [0.030, 0.070, 0.040, 0.380, 0.190, 0.085],  # growing rice
        [0.050, 0.070, 0.060, 0.110, 0.060, 0.035],  # flooded paddy
        [0.050, 0.080, 0.085, 0.270, 0.260, 0.150],  # ripe rice
        [0.030, 0.060, 0.040, 0.300, 0.170, 0.080],  # orchard canopy
        [0.035, 0.075, 0.045, 0.330, 0.200, 0.095],  # vegetables
        [0.075, 0.105, 0.150, 0.220, 0.300, 0.230],  # bare red soil
        [0.040, 0.075, 0.060, 0.280, 0.220, 0.120],  # grass
        [0.028, 0.050, 0.035, 0.260, 0.150, 0.070],  # urban trees
        [0.120, 0.135, 0.150, 0.190, 0.230, 0.200],  # concrete
        [0.070, 0.080, 0.090, 0.110, 0.135, 0.120],  # asphalt
        [0.130, 0.120, 0.085, 0.150, 0.120, 0.090],  # blue steel roof
        [0.280, 0.300, 0.310, 0.340, 0.310, 0.260],  # white roof
        [0.140, 0.150, 0.160, 0.180, 0.190, 0.160],  # grey steel roof
        [0.070, 0.085, 0.130, 0.200, 0.250, 0.200],  # red tile
        [0.060, 0.065, 0.070, 0.090, 0.110, 0.100],  # dark roof
        [0.220, 0.240, 0.240, 0.300, 0.260, 0.200],  # greenhouse film
    ],
    dtype=np.float32,
)

M = Material
ROOF_CHOICES = {  # material: probability
    "industrial": {M.METAL_BLUE: 0.35, M.METAL_WHITE: 0.15, M.METAL_GREY: 0.25, M.CONCRETE: 0.25},
    "town": {
        M.CONCRETE: 0.45,
        M.ROOF_DARK: 0.2,
        M.TILE_RED: 0.15,
        M.METAL_BLUE: 0.12,
        M.METAL_WHITE: 0.08,
    },
    "village": {M.TILE_RED: 0.45, M.CONCRETE: 0.3, M.ROOF_DARK: 0.1, M.METAL_BLUE: 0.15},
}
YARD_CHOICES = {M.CONCRETE: 0.6, M.ASPHALT: 0.15, M.BARE_SOIL: 0.25}
FARM_CHOICES = {"orchard": 0.45, "vegetables": 0.38, "greenhouse": 0.02, "fallow": 0.15}


def render_imagery(land: Landscape, recipe: RegionRecipe, rng: np.random.Generator) -> np.ndarray:
    """Render the six-band image of a region as Sentinel-2 L2A integers (band, row, col).

    Reflectance x 10000, no offset, clipped to 1..65535 so that 0 stays nodata.
    """
    shape = land.shape
    n_parcels = len(land.parcels) + 1
    pid = land.parcel_id
    lu = land.landuse
    base = np.full(shape, M.GRASS, np.uint8)  # what is under
    top = np.full(shape, M.GRASS, np.uint8)  # what covers it, with fraction `frac`
    frac = np.zeros(shape, np.float32)
    fine = smooth_noise(rng, shape, 0.8)  # pixel-scale texture
    u_pixel = rng.random(shape, dtype=np.float32)

    # Per-parcel draws (index 0 = no parcel).
    draw = rng.random(n_parcels)
    cover = rng.random(n_parcels)
    # Spatially correlated per-parcel draws: neighbouring fields are in the same season.
    season = _at_parcels(land, smooth_noise(rng, shape, 40.0))

    def put(mask: np.ndarray, b, t, f) -> None:
        base[mask] = b[mask] if isinstance(b, np.ndarray) else b
        top[mask] = t[mask] if isinstance(t, np.ndarray) else t
        frac[mask] = f[mask] if isinstance(f, np.ndarray) else f

    def choose(choices: dict, u: np.ndarray) -> np.ndarray:
        keys = np.array([int(k) for k in choices], np.uint8)
        cum = np.cumsum(list(choices.values()))
        return keys[np.minimum(np.searchsorted(cum / cum[-1], u), keys.size - 1)]

    # Forest: canopy with small gaps.
    mask = lu == LandUse.FOREST
    put(mask, M.FOREST, M.GRASS, np.clip(0.4 * (fine - 1.2), 0, 0.6))

    # Paddy: the growth stage varies smoothly across the plain, the cover per field.
    mask = lu == LandUse.PADDY
    stages = recipe.paddy_stage
    q = np.cumsum([stages["flooded"], stages["growing"], stages["mature"]])
    stage = np.searchsorted(q / (q[-1] + stages["fallow"]), _rank01(season))
    growth = np.clip(0.35 + 0.6 * cover, 0, 1)
    s = stage[pid]
    g = np.clip(growth[pid] + 0.08 * fine, 0, 1)
    b = np.select([s == 0, s == 1, s == 2], [M.PADDY_FLOODED, M.PADDY_FLOODED, M.RICE], M.BARE_SOIL)
    t = np.select([s == 0, s == 1, s == 2], [M.RICE, M.RICE, M.RICE_RIPE], M.GRASS)
    f = np.select([s == 0, s == 1, s == 2], [0.25 * g, g, g], 0.5 * g)
    put(mask, b.astype(np.uint8), t.astype(np.uint8), f.astype(np.float32))

    # Dry farmland and orchards: tree canopy over bare soil, vegetable beds in rows,
    # greenhouses (as bright as a white shed), fallow land.
    mask = lu == LandUse.DRY_FARMLAND_ORCHARD
    choices = dict(FARM_CHOICES)
    if recipe.share["forest"] > 0.2:  # hilly: mostly orchards
        choices = {"orchard": 0.7, "vegetables": 0.16, "greenhouse": 0.02, "fallow": 0.12}
    kinds = np.array(list(choices))
    cum = np.cumsum(list(choices.values()))
    kind = kinds[np.minimum(np.searchsorted(cum, draw), kinds.size - 1)][pid]
    rows = _stripes(land, rng, period_px=2.3)
    c = cover[pid]
    b = np.full(shape, M.BARE_SOIL, np.uint8)
    t = np.select(
        [kind == "orchard", kind == "vegetables", kind == "greenhouse"],
        [M.ORCHARD, M.CROP, M.PLASTIC_FILM],
        M.GRASS,
    ).astype(np.uint8)
    f = np.select(
        [kind == "orchard", kind == "vegetables", kind == "greenhouse"],
        [0.5 + 0.35 * c + 0.1 * fine, 0.25 + 0.6 * c * rows, 0.75 + 0.2 * c],
        0.2 + 0.4 * c,
    )
    put(mask, b, t, np.clip(f, 0, 1).astype(np.float32))

    # Field margins: paths and grass banks between fields.
    farm = (lu == LandUse.PADDY) | (lu == LandUse.DRY_FARMLAND_ORCHARD)
    margin = farm & _parcel_edge(pid) & (u_pixel < 0.7)
    frac[margin] *= 0.6
    base[margin] = M.GRASS

    # Green space: lawns and trees; some vacant lots are bare.
    mask = lu == LandUse.GREEN_SPACE
    vacant = (draw < 0.2)[pid]
    put(mask & ~vacant, M.GRASS, M.TREE, np.clip(0.45 + 0.35 * smooth_noise(rng, shape, 2.0), 0, 1))
    put(mask & vacant, M.BARE_SOIL, M.GRASS, np.clip(0.25 + 0.2 * fine, 0, 1))

    # Water.
    wk = land.water_kind
    put(wk == WaterKind.RIVER, M.WATER_TURBID, M.WATER_POND, 0.1)
    put(wk == WaterKind.CANAL, M.WATER_TURBID, M.GRASS, 0.15)
    pond = wk == WaterKind.POND
    dyke = pond & _parcel_edge(pid)
    put(pond, M.WATER_POND, M.WATER_TURBID, (0.6 * cover)[pid].astype(np.float32))
    put(dyke, M.GRASS, M.WATER_POND, 0.5)
    if land.sea is not None:
        sea = wk == WaterKind.SEA
        plume = np.exp(-distance_m(wk == WaterKind.RIVER, PIXEL_M) / 1500.0)
        put(sea, M.WATER_SEA, M.WATER_TURBID, plume.astype(np.float32))

    # Roads: asphalt, concrete expressways, street trees on local streets.
    rc = land.road_class
    put(rc > 0, M.ASPHALT, M.TREE, np.clip(0.15 * fine, 0, 0.3))
    put(rc == RoadClass.EXPRESSWAY, M.CONCRETE, M.ASPHALT, 0.4)

    # Industrial land: yards of concrete, asphalt or bare soil; sheds of steel or concrete.
    mask = lu == LandUse.INDUSTRIAL
    yard = choose(YARD_CHOICES, draw)[pid]
    put(mask, yard, M.GRASS, np.clip(0.08 + 0.1 * fine, 0, 0.3))
    bid = land.building_id
    n_buildings = len(land.buildings) + 1
    roof = choose(ROOF_CHOICES["industrial"], rng.random(n_buildings))[bid]
    shed = bid > 0
    put(shed, roof, M.CONCRETE, 0.0)

    # Residential land: sub-pixel houses, so a roof fraction with street trees between.
    mask = lu == LandUse.RESIDENTIAL
    village = land.parcels["subtype"].to_numpy() == "village"
    village = np.r_[False, village][pid]
    density = np.where(village, 0.45 + 0.3 * cover[pid], 0.55 + 0.35 * cover[pid])
    roof_frac = np.clip(density + 0.22 * fine + 0.12 * (_stripes(land, rng, 2.0) - 0.5), 0, 0.97)
    town_roof = choose(ROOF_CHOICES["town"], draw)
    village_roof = choose(ROOF_CHOICES["village"], draw)
    # Half the houses of a parcel share its dominant roof, the others vary house by house.
    u_roof = rng.random(shape, dtype=np.float32)
    roof = np.where(village, village_roof[pid], town_roof[pid])
    mixed = np.where(
        village, choose(ROOF_CHOICES["village"], u_roof), choose(ROOF_CHOICES["town"], u_roof)
    )
    roof = np.where(u_pixel < 0.5, mixed, roof).astype(np.uint8)
    ground = np.where(smooth_noise(rng, shape, 1.5) > -0.2, M.TREE, M.CONCRETE).astype(np.uint8)
    put(mask, ground, roof, roof_frac.astype(np.float32))

    # Mix the two materials and add brightness, texture, terrain and atmosphere.
    refl = (1.0 - frac)[..., None] * REFLECTANCE[base] + frac[..., None] * REFLECTANCE[top]
    parcel_gain = np.exp(
        rng.normal(0, 0.08, (n_parcels, 1)) + rng.normal(0, 0.03, (n_parcels, len(BANDS)))
    ).astype(np.float32)
    refl *= parcel_gain[pid]
    building_gain = np.exp(rng.normal(0, 0.12, (n_buildings, 1))).astype(np.float32)
    refl *= building_gain[bid]
    texture = 1.0 + 0.04 * rng.standard_normal(shape, dtype=np.float32) + 0.04 * fine
    refl *= texture[..., None]
    refl *= _hillshade(land.dem)[..., None]
    haze = 0.006 * (1.0 + smooth_noise(rng, shape, 150.0)) / 2.0
    refl += haze[..., None] * np.array([1.0, 0.7, 0.45, 0.2, 0.05, 0.02], np.float32)

    # Sensor: point spread function (adjacent pixels mix), then noise.
    out = np.empty((len(BANDS), *shape), np.uint16)
    noise_sd = np.array([0.0025, 0.0025, 0.0025, 0.004, 0.004, 0.004], np.float32)
    for k in range(len(BANDS)):
        band = ndimage.gaussian_filter(refl[..., k], sigma=0.5, mode="nearest", truncate=3.0)
        band = band * (1.0 + 0.01 * rng.standard_normal(shape, dtype=np.float32))
        band += noise_sd[k] * rng.standard_normal(shape, dtype=np.float32)
        out[k] = np.clip(np.rint(band * REFLECTANCE_SCALE), 1, 65535).astype(np.uint16)
    return out


def _at_parcels(land: Landscape, field: np.ndarray) -> np.ndarray:
    """Value of a raster at a point of each parcel (index = parcel id, 0 = none)."""
    out = np.zeros(len(land.parcels) + 1, np.float32)
    ids = land.parcel_id.ravel()
    sums = np.bincount(ids, weights=field.ravel(), minlength=out.size)
    counts = np.bincount(ids, minlength=out.size)
    np.divide(sums, counts, out=out, where=counts > 0, casting="unsafe")
    return out


def _rank01(values: np.ndarray) -> np.ndarray:
    """Empirical quantile of each value in (0, 1)."""
    order = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return (order + 0.5) / values.size


def _stripes(land: Landscape, rng: np.random.Generator, period_px: float) -> np.ndarray:
    """A 0-1 row pattern with a random orientation per parcel (crop rows, house rows)."""
    n = len(land.parcels) + 1
    angle = rng.uniform(0, np.pi, n).astype(np.float32)[land.parcel_id]
    phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[land.parcel_id]
    rows, cols = np.indices(land.shape, dtype=np.float32)
    along = cols * np.cos(angle) + rows * np.sin(angle)
    return 0.5 + 0.5 * np.sin(2 * np.pi * along / period_px + phase)


def _parcel_edge(pid: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbourhood holds another parcel (dykes between ponds)."""
    edge = np.zeros(pid.shape, bool)
    edge[1:, :] |= pid[1:, :] != pid[:-1, :]
    edge[:-1, :] |= pid[:-1, :] != pid[1:, :]
    edge[:, 1:] |= pid[:, 1:] != pid[:, :-1]
    edge[:, :-1] |= pid[:, :-1] != pid[:, 1:]
    return edge


def _hillshade(dem: np.ndarray, azimuth: float = 150.0, altitude: float = 50.0) -> np.ndarray:
    """Illumination factor of each pixel relative to flat ground (sun in the SSE, late morning)."""
    dy, dx = np.gradient(dem.astype(np.float32), PIXEL_M)
    slope = np.arctan(np.hypot(dx, dy))
    aspect = np.arctan2(-dx, dy)  # downslope direction, clockwise from north
    zenith = np.deg2rad(90.0 - altitude)
    az = np.deg2rad(azimuth)
    cos_i = np.cos(zenith) * np.cos(slope) + np.sin(zenith) * np.sin(slope) * np.cos(az - aspect)
    return np.clip(cos_i / np.cos(zenith), 0.25, 1.4).astype(np.float32)
