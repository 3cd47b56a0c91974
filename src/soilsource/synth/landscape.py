"""The landscape of one region: terrain, river, roads, parcels, buildings, land use.

The city is built the way cities are mapped, as vectors first: a meandering river
with irrigation canals, a road graph (an expressway, arterials through the towns,
collector and local street grids in towns and industrial zones, lanes in
villages), blocks between them, parcels by recursive bisection of blocks, and
buildings inside built-up parcels. Land use is decided per parcel from smooth
"zone" fields (towns, industrial zones, villages, hills, floodplain) with noise
and area quotas, so every class is present at every size and class boundaries
follow parcel edges, not noise contours. Everything is then burnt into rasters
with :func:`rasterio.features.rasterize`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio import features
from rasterio.features import rasterize
from shapely.geometry import LineString, MultiPoint, Point, Polygon, box
from shapely.geometry import shape as geojson_shape

from soilsource.synth.fields import distance_m, nearest_index, rescale01, smooth_noise
from soilsource.synth.recipes import CRS, DEFAULT_SIZE_PX, PIXEL_M, LandUse, RegionRecipe


class RoadClass(IntEnum):
    """Road classes of the road raster (0: no road)."""

    EXPRESSWAY = 1
    ARTERIAL = 2
    COLLECTOR = 3
    LOCAL = 4


ROAD_WIDTH_M = {
    RoadClass.EXPRESSWAY: 36.0,
    RoadClass.ARTERIAL: 24.0,
    RoadClass.COLLECTOR: 14.0,
    RoadClass.LOCAL: 7.0,
}


class WaterKind(IntEnum):
    """Kinds of water in the water raster (0: not water)."""

    RIVER = 1
    CANAL = 2
    POND = 3
    SEA = 4


CANAL_WIDTH_M = 9.0


@dataclass
class Landscape:
    """Vectors and rasters of one region, all in EPSG:32649 on one 10 m grid."""

    name: str
    transform: Affine
    shape: tuple[int, int]
    landuse: np.ndarray  # uint8 LandUse codes
    parcel_id: np.ndarray  # int32, 0 where there is no parcel (roads, river, canals, sea)
    parcels: gpd.GeoDataFrame  # index parcel_id: landuse, subtype, zone scores, geometry
    building_id: np.ndarray  # int32, 0 where there is no roof
    buildings: gpd.GeoDataFrame  # index building_id: parcel_id, geometry
    road_class: np.ndarray  # uint8 RoadClass, 0 elsewhere
    roads: gpd.GeoDataFrame  # road_class, width_m, geometry (centre lines)
    water_kind: np.ndarray  # uint8 WaterKind, 0 elsewhere
    river: LineString  # centre line, upstream first
    canal_id: np.ndarray  # int32, 0 elsewhere
    canals: gpd.GeoDataFrame  # index canal_id: offtake_m (arc length on the river), geometry
    dem: np.ndarray  # float32 elevation, m
    sea: Polygon | None
    zone: float  # scale of zones relative to a default-size region (small regions: < 1)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in metres."""
        rows, cols = self.shape
        left, top = self.transform.c, self.transform.f
        return left, top - rows * PIXEL_M, left + cols * PIXEL_M, top

    def pixel_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """x of each column and y of each row (pixel centres), metres."""
        rows, cols = self.shape
        left, _, _, top = self.bounds
        xs = left + (np.arange(cols) + 0.5) * PIXEL_M
        ys = top - (np.arange(rows) + 0.5) * PIXEL_M
        return xs, ys


def region_origin(recipe: RegionRecipe, size_px: int) -> tuple[float, float]:
    """South-west corner of a region: the six tile a 3 x 2 block near Dongguan, 4 km apart."""
    row, col = recipe.grid
    side = size_px * PIXEL_M
    return 770_000.0 + col * (side + 4000.0), 2_525_000.0 + row * (side + 4000.0)


def build_landscape(recipe: RegionRecipe, size_px: int, rng: np.random.Generator) -> Landscape:
    """Generate the landscape of one region.

    Zone sizes (towns, industrial zones, hills, meanders) scale with the region so
    that a small region keeps the land-use mix of the full one; parcels, buildings
    and road widths keep their real sizes in metres.
    """
    x0, y0 = region_origin(recipe, size_px)
    side = size_px * PIXEL_M
    zone = max(size_px / DEFAULT_SIZE_PX, 0.15)  # zone scale factor
    region = box(x0, y0, x0 + side, y0 + side)
    transform = Affine(PIXEL_M, 0.0, x0, 0.0, -PIXEL_M, y0 + side)
    shape = (size_px, size_px)
    grid = _Grid(transform, shape)

    # Water: river (upstream first), optional sea, then the floodplain.
    sea = _coast(region, zone, rng) if recipe.coast else None
    river = _river(recipe, region, zone, sea, rng)
    river_in = _inside(river, region)  # arc lengths along the river are measured on this
    river_poly = river.buffer(recipe.river_width_m * max(zone, 0.5) / 2, quad_segs=4)
    if sea is not None:
        river_poly = river_poly.difference(sea)
    d_river = distance_m(grid.burn([river_poly]), PIXEL_M)
    sea_mask = grid.burn([sea]) if sea is not None else np.zeros(shape, bool)
    d_sea = distance_m(sea_mask, PIXEL_M)
    floodplain = np.exp(-d_river / (900.0 * zone + recipe.river_width_m)).astype(np.float32)
    if sea is not None:
        floodplain = np.maximum(floodplain, np.exp(-d_sea / (1200.0 * zone)))

    # Zone centres and fields.
    towns = _scatter(rng, region, recipe.n_towns, lambda p: _clear_of(p, river_poly, sea, 300.0))
    r_town = recipe.town_radius_m * zone
    r_ind = recipe.industrial_radius_m * zone
    industry = _industrial_centres(recipe, region, river, river_poly, sea, towns, r_town, zone, rng)
    town_field = _bumps(grid, towns, r_town) + 0.12 * smooth_noise(rng, shape, 80 * zone)
    ind_field = _bumps(grid, industry, r_ind) + 0.12 * smooth_noise(rng, shape, 60 * zone)
    hill_score = (
        0.7 * smooth_noise(rng, shape, 140 * zone)
        + 0.3 * smooth_noise(rng, shape, 35 * zone)
        - 2.0 * floodplain
        - 1.2 * np.clip(town_field, 0, 1)
        - 1.0 * np.clip(ind_field, 0, 1)
    )
    if sea is not None:
        hill_score[sea_mask] = hill_score.min()
    threshold = np.quantile(hill_score, 1.0 - recipe.hill_share)
    hills = np.clip((hill_score - threshold) / (hill_score.max() - threshold + 1e-9), 0, 1)
    # Power > 1: slopes start gently at the foot of a hill (no cliff, no shading seam).
    relief = 280.0 * hills**1.4
    dem = (3.0 + 6.0 * rescale01(smooth_noise(rng, shape, 60 * zone)) + relief).astype(np.float32)
    hill_land = _mask_polygon(hills > 0.08, transform)
    n_villages = max(1, round(recipe.villages_per_100km2 * (side / 1000.0) ** 2 / 100.0))

    def village_site(p: Point) -> bool:
        r, c = grid.index(p.x, p.y)
        return (
            town_field[r, c] < 0.25
            and ind_field[r, c] < 0.25
            and hills[r, c] == 0
            and _clear_of(p, river_poly, sea, 150.0)
        )

    villages = _scatter(rng, region, n_villages, village_site)
    village_field = _bumps(grid, villages, 230.0)

    # Roads and canals: the lines that cut the land into blocks.
    roads = _roads(
        recipe, region, sea, hill_land, towns, industry, villages, r_town, r_ind, zone, rng
    )
    canals = _canals(recipe, region, river_in, river_poly, town_field, grid, zone, sea, rng)
    cuts = [
        shapely.buffer(roads.geometry.values, roads["width_m"].to_numpy() / 2, cap_style="flat"),
        [river_poly],
        shapely.buffer(canals.geometry.values, CANAL_WIDTH_M / 2, cap_style="flat"),
    ]
    if sea is not None:
        cuts.append([sea])
    cut = shapely.union_all(np.concatenate([np.asarray(c, dtype=object) for c in cuts]))
    blocks = shapely.get_parts(region.difference(cut))
    blocks = blocks[(shapely.get_type_id(blocks) == 3) & (shapely.area(blocks) > 100.0)]

    # Parcels: bisect blocks down to a size that depends on the zone.
    fields = {
        "hill": hills,
        "industrial": np.clip(ind_field, 0, 1.2),
        "town": np.clip(town_field, 0, 1.2),
        "village": village_field,
        "floodplain": floodplain,
    }
    block_scores = grid.sample(fields, shapely.point_on_surface(blocks))
    target = np.exp(
        np.log(8000.0)
        + block_scores["hill"] * np.log(12.0)
        + block_scores["industrial"] * np.log(4.0)
        + block_scores["town"] * np.log(1.3)
    )
    geoms, _ = subdivide(blocks, target, rng, min_area=150.0)
    parcels = gpd.GeoDataFrame({"geometry": geoms}, crs=CRS)
    parcels.index = np.arange(1, len(parcels) + 1)
    parcels.index.name = "parcel_id"
    # Smooth noise per class (a few hundred metres) keeps paddy, orchard, ponds and
    # woodlots in contiguous tracts instead of salt and pepper.
    for key, scale_m in (
        ("n_forest", 500),
        ("n_paddy", 600),
        ("n_pond", 350),
        ("n_green", 250),
        ("n_urban", 250),
    ):
        fields[key] = smooth_noise(rng, shape, scale_m / PIXEL_M)
    scores = grid.sample(fields, shapely.point_on_surface(geoms))
    d_arterial = distance_m(
        grid.burn(roads.geometry[roads["road_class"] <= RoadClass.ARTERIAL].tolist()), PIXEL_M
    )
    scores["arterial"] = grid.sample({"a": np.exp(-d_arterial / 400.0)}, parcels.geometry.values)[
        "a"
    ]
    parcels["kind"] = _assign_landuse(recipe, shapely.area(geoms), scores, rng)
    parcels["landuse"] = np.array([KIND_CODE[k] for k in parcels["kind"]], np.uint8)
    parcels["subtype"] = np.where(scores["village"] > scores["town"], "village", "town")
    for key in ("hill", "industrial", "town", "village", "floodplain"):
        parcels[key] = scores[key].astype(np.float32)

    buildings = _buildings(parcels, rng)

    # Rasters. Parcels first, then water and roads on top (roads last: bridges).
    parcel_id = grid.burn_values(parcels.geometry.values, parcels.index.to_numpy(), np.int32)
    lut = np.zeros(len(parcels) + 1, np.uint8)
    lut[parcels.index.to_numpy()] = parcels["landuse"].to_numpy()
    landuse = lut[parcel_id]
    water_kind = np.zeros(shape, np.uint8)
    is_pond = np.isin(parcel_id, parcels.index[parcels["kind"] == "pond"].to_numpy())
    water_kind[is_pond] = WaterKind.POND
    water_kind[grid.burn([river_poly])] = WaterKind.RIVER
    canal_id = grid.burn_values(
        canals.geometry.values, canals.index.to_numpy(), np.int32, all_touched=True
    )
    water_kind[canal_id > 0] = WaterKind.CANAL
    water_kind[sea_mask] = WaterKind.SEA
    road_class = np.zeros(shape, np.uint8)
    for cls in (RoadClass.LOCAL, RoadClass.COLLECTOR, RoadClass.ARTERIAL, RoadClass.EXPRESSWAY):
        lines = roads.geometry[roads["road_class"] == cls].values
        if len(lines) == 0:
            continue
        if ROAD_WIDTH_M[cls] < PIXEL_M:  # narrower than a pixel: every pixel it touches
            mask = grid.burn(list(lines), all_touched=True)
        else:
            mask = grid.burn(list(shapely.buffer(lines, ROAD_WIDTH_M[cls] / 2, cap_style="flat")))
        road_class[mask] = cls
    water_kind[road_class > 0] = 0
    canal_id[water_kind != WaterKind.CANAL] = 0

    landuse[water_kind > 0] = LandUse.WATER
    landuse[road_class > 0] = LandUse.ROAD
    parcel_id[(water_kind > 0) & ~is_pond] = 0
    parcel_id[road_class > 0] = 0
    # Slivers that no parcel covered take the class and parcel of the nearest parcel.
    gap = landuse == 0
    if gap.any():
        _, ri, ci = nearest_index(~gap, PIXEL_M)
        landuse[gap] = landuse[ri[gap], ci[gap]]
        parcel_id[gap] = parcel_id[ri[gap], ci[gap]]

    building_id = grid.burn_values(buildings.geometry.values, buildings.index.to_numpy(), np.int32)
    built = np.isin(landuse, (LandUse.INDUSTRIAL, LandUse.RESIDENTIAL))
    building_id[~built] = 0
    return Landscape(
        name=recipe.name,
        transform=transform,
        shape=shape,
        landuse=landuse,
        parcel_id=parcel_id,
        parcels=parcels,
        building_id=building_id,
        buildings=buildings,
        road_class=road_class,
        roads=roads,
        water_kind=water_kind,
        river=river_in,
        canal_id=canal_id,
        canals=canals,
        dem=dem,
        sea=sea,
        zone=zone,
    )


# --------------------------------------------------------------------------- grid


class _Grid:
    """The pixel grid: burning vectors and sampling rasters at points."""

    def __init__(self, transform: Affine, shape: tuple[int, int]) -> None:
        self.transform = transform
        self.shape = shape

    def burn(self, geoms: list, all_touched: bool = False) -> np.ndarray:
        geoms = [g for g in geoms if g is not None and not g.is_empty]
        if not geoms:
            return np.zeros(self.shape, bool)
        return rasterize(
            ((g, 1) for g in geoms),
            out_shape=self.shape,
            transform=self.transform,
            fill=0,
            dtype=np.uint8,
            all_touched=all_touched,
        ).astype(bool)

    def burn_values(
        self, geoms: np.ndarray, values: np.ndarray, dtype: type, all_touched: bool = False
    ) -> np.ndarray:
        geoms = np.asarray(geoms, dtype=object)
        keep = ~shapely.is_empty(geoms)
        # GeoJSON dicts are much faster for rasterio than shapely's __geo_interface__.
        shapes = [json.loads(g) for g in shapely.to_geojson(geoms[keep])]
        pairs = list(zip(shapes, np.asarray(values)[keep].tolist(), strict=True))
        if not pairs:
            return np.zeros(self.shape, dtype)
        return rasterize(
            pairs,
            out_shape=self.shape,
            transform=self.transform,
            fill=0,
            dtype=dtype,
            all_touched=all_touched,
        )

    def index(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        col = np.floor((np.asarray(x) - self.transform.c) / PIXEL_M).astype(int)
        row = np.floor((self.transform.f - np.asarray(y)) / PIXEL_M).astype(int)
        return np.clip(row, 0, self.shape[0] - 1), np.clip(col, 0, self.shape[1] - 1)

    def sample(self, fields: dict[str, np.ndarray], points: np.ndarray) -> dict[str, np.ndarray]:
        xy = shapely.get_coordinates(shapely.point_on_surface(points))
        r, c = self.index(xy[:, 0], xy[:, 1])
        return {k: np.asarray(v)[r, c] for k, v in fields.items()}


def _mask_polygon(mask: np.ndarray, transform: Affine) -> Polygon:
    """The True area of a raster mask as one (multi)polygon, via rasterio's polygonizer."""
    if not mask.any():
        return Polygon()
    shapes = features.shapes(mask.astype(np.uint8), mask=mask, transform=transform)
    return shapely.union_all([geojson_shape(geom) for geom, _ in shapes])


def _bumps(grid: _Grid, centres: list[Point], radius: float) -> np.ndarray:
    """Max over centres of a Gaussian bump exp(-(d / radius)^2); zeros without centres."""
    out = np.zeros(grid.shape, np.float32)
    rows, cols = grid.shape
    xs = grid.transform.c + (np.arange(cols) + 0.5) * PIXEL_M
    ys = grid.transform.f - (np.arange(rows) + 0.5) * PIXEL_M
    for p in centres:
        dx2 = ((xs - p.x) / radius) ** 2
        dy2 = ((ys - p.y) / radius) ** 2
        np.maximum(out, np.exp(-(dy2[:, None] + dx2[None, :])), out=out)
    return out


# --------------------------------------------------------------------------- water


def _meander(
    centre: np.ndarray,
    direction: np.ndarray,
    half_length: float,
    amplitude: float,
    wavelength: float,
    rng: np.random.Generator,
    n: int = 400,
) -> LineString:
    """A smooth wiggly line through ``centre`` along ``direction`` (a unit vector)."""
    t = np.linspace(-half_length, half_length, n)
    normal = np.array([-direction[1], direction[0]])
    offset = np.zeros(n)
    for k, weight in enumerate((1.0, 0.45, 0.2)):
        lam = wavelength / (1.0 + 0.9 * k) * rng.uniform(0.8, 1.25)
        offset += weight * np.sin(2 * np.pi * t / lam + rng.uniform(0, 2 * np.pi))
    offset *= amplitude / 1.65
    xy = centre[None, :] + t[:, None] * direction[None, :] + offset[:, None] * normal[None, :]
    return LineString(xy)


def _river(
    recipe: RegionRecipe,
    region: Polygon,
    zone: float,
    sea: Polygon | None,
    rng: np.random.Generator,
) -> LineString:
    """The main river's centre line, upstream end first, extending past the region."""
    theta = np.deg2rad(recipe.river_flow_deg + rng.normal(0, 8))
    flow = np.array([np.sin(theta), np.cos(theta)])
    normal = np.array([-flow[1], flow[0]])
    cx, cy = region.centroid.x, region.centroid.y
    side = np.sqrt(region.area)
    centre = np.array([cx, cy]) + normal * (recipe.river_offset - 0.5) * side * 0.8
    line = _meander(
        centre,
        flow,
        half_length=side,
        amplitude=300.0 * max(zone, 0.3),
        wavelength=3500.0 * max(zone, 0.3),
        rng=rng,
    )
    if sea is not None:  # the river ends in the sea
        land = line.difference(sea)
        if land.geom_type != "LineString":
            land = shapely.get_parts(land)[0]  # the upstream piece
        line = land
    return line


def _inside(river: LineString, region: Polygon) -> LineString:
    """The river's longest stretch inside the region, still upstream first."""
    inside = shapely.intersection(river, region)
    if inside.geom_type != "LineString":
        inside = max(shapely.get_parts(inside), key=lambda g: g.length)
    source = Point(river.coords[0])
    if source.distance(Point(inside.coords[-1])) < source.distance(Point(inside.coords[0])):
        inside = inside.reverse()
    return inside


def _coast(region: Polygon, zone: float, rng: np.random.Generator) -> Polygon:
    """Estuary on the west: a piecewise straight (reclaimed) coastline."""
    x0, y0, _, y1 = region.bounds
    side = y1 - y0
    ys = np.linspace(y0 - 50, y1 + 50, 7)
    xs = x0 + side * 0.15 + rng.normal(0, 120.0 * max(zone, 0.3), ys.size)
    xs[::2] += rng.uniform(-60, 60, xs[::2].size)
    ring = [(x0 - 2000, y0 - 2000), *zip(xs, ys, strict=True), (x0 - 2000, y1 + 2000)]
    ring.insert(1, (xs[0], y0 - 2000))
    ring.insert(-1, (xs[-1], y1 + 2000))
    return Polygon(ring).buffer(0)


def _canals(
    recipe: RegionRecipe,
    region: Polygon,
    river: LineString,
    river_poly: Polygon,
    town_field: np.ndarray,
    grid: _Grid,
    zone: float,
    sea: Polygon | None,
    rng: np.random.Generator,
) -> gpd.GeoDataFrame:
    """Irrigation canals: each leaves the river at an offtake and runs into the fields."""
    inside = shapely.intersection(river, region)
    length = inside.length
    n = max(1, round(recipe.canals_per_km * length / 1000.0 * max(zone, 0.4)))
    lines, offtakes = [], []
    for s in np.sort(rng.uniform(0.08, 0.92, n)) * length:
        p = river.interpolate(river.project(inside.interpolate(s)))
        ahead = river.interpolate(river.project(p) + 20.0)
        tangent = np.array([ahead.x - p.x, ahead.y - p.y])
        tangent /= np.linalg.norm(tangent) + 1e-9
        normal = np.array([-tangent[1], tangent[0]])
        # Go to the side with less town: canals serve fields.
        probes = [np.array([p.x, p.y]) + sgn * 500.0 * normal for sgn in (1, -1)]
        town = [town_field[grid.index(*q)] for q in probes]
        sgn = 1 if town[0] <= town[1] else -1
        d = sgn * normal
        turn = np.array([-d[1], d[0]]) * rng.choice([-1, 1])
        a = np.array([p.x, p.y])
        b = a + d * rng.uniform(400, 1100)
        pts = [a, b]
        if rng.random() < 0.6:
            pts.append(b + turn * rng.uniform(250, 800))
        line = LineString(pts)
        line = line.difference(river_poly.buffer(-1.0)) if line.intersects(river_poly) else line
        if sea is not None:
            line = line.difference(sea)
        line = shapely.intersection(line, region)
        if line.is_empty:
            continue
        lines.append(shapely.line_merge(line) if line.geom_type == "MultiLineString" else line)
        offtakes.append(float(river.project(p)))
    canals = gpd.GeoDataFrame({"offtake_m": offtakes, "geometry": lines}, crs=CRS)
    canals.index = np.arange(1, len(canals) + 1)
    canals.index.name = "canal_id"
    return canals


# --------------------------------------------------------------------------- zones


def _clear_of(p: Point, river_poly: Polygon, sea: Polygon | None, margin: float) -> bool:
    if p.distance(river_poly) < margin:
        return False
    return sea is None or p.distance(sea) >= margin


def _scatter(
    rng: np.random.Generator, region: Polygon, n: int, ok, tries: int = 400
) -> list[Point]:
    """``n`` random points in the middle 80 % of the region that pass ``ok``, spread apart."""
    x0, y0, x1, y1 = region.bounds
    side = x1 - x0
    points: list[Point] = []
    spacing = side / max(2.0, np.sqrt(n) + 1.0)
    for attempt in range(tries * max(n, 1)):
        if len(points) == n:
            break
        p = Point(
            rng.uniform(x0 + 0.1 * side, x1 - 0.1 * side),
            rng.uniform(y0 + 0.1 * side, y1 - 0.1 * side),
        )
        relax = attempt / (tries * max(n, 1))  # give up on the rules gradually
        if relax < 0.5 and not ok(p):
            continue
        if any(p.distance(q) < spacing * (1 - relax) for q in points):
            continue
        points.append(p)
    return points


def _industrial_centres(
    recipe: RegionRecipe,
    region: Polygon,
    river: LineString,
    river_poly: Polygon,
    sea: Polygon | None,
    towns: list[Point],
    r_town: float,
    zone: float,
    rng: np.random.Generator,
) -> list[Point]:
    """Centres of industrial zones: on the river, on the coast, at the edge or anywhere."""
    x0, y0, x1, y1 = region.bounds
    side = x1 - x0
    r = recipe.industrial_radius_m * zone

    def away_from_towns(p: Point) -> bool:
        return all(p.distance(t) > 0.7 * r_town for t in towns) and _clear_of(
            p, river_poly, sea, 150.0
        )

    if recipe.industry_at == "anywhere":
        return _scatter(rng, region, recipe.n_industrial_zones, away_from_towns)
    centres: list[Point] = []
    inner = region.buffer(-0.08 * side)
    for _ in range(400 * recipe.n_industrial_zones):
        if len(centres) == recipe.n_industrial_zones:
            break
        if recipe.industry_at == "river":
            inside = shapely.intersection(river, inner)
            if inside.is_empty:
                break
            q = inside.interpolate(rng.uniform(0, inside.length))
            p = Point(q.x + rng.normal(0, 0.7 * r), q.y + rng.normal(0, 0.7 * r))
        elif recipe.industry_at == "coast" and sea is not None:
            coast = shapely.intersection(sea.boundary, inner)
            q = coast.interpolate(rng.uniform(0, coast.length))
            p = Point(q.x + rng.uniform(0.4, 1.0) * r, q.y + rng.normal(0, 0.3 * r))
        else:  # edge
            t = rng.uniform(0.12, 0.88)
            edge = rng.integers(4)
            depth = rng.uniform(0.1, 0.2) * side
            p = [
                Point(x0 + t * side, y0 + depth),
                Point(x0 + t * side, y1 - depth),
                Point(x0 + depth, y0 + t * side),
                Point(x1 - depth, y0 + t * side),
            ][edge]
        if not inner.contains(p) or not away_from_towns(p):
            continue
        if any(p.distance(q) < 1.5 * r for q in centres):
            continue
        centres.append(p)
    while len(centres) < recipe.n_industrial_zones:  # crowded: fall back to anywhere
        centres += _scatter(rng, region, 1, away_from_towns)
    return centres


# --------------------------------------------------------------------------- roads


def _irregular_disc(centre: Point, radius: float, rng: np.random.Generator) -> Polygon:
    """A blob-free district outline: a disc with a few low-order lobes."""
    theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    r = np.ones_like(theta)
    for k in (2, 3, 5):
        r += 0.15 / k**0.5 * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    xy = np.c_[centre.x + radius * r * np.cos(theta), centre.y + radius * r * np.sin(theta)]
    return Polygon(xy)


def _grid_lines(
    centre: Point,
    angle: float,
    spacing: float,
    half_extent: float,
    rng: np.random.Generator,
    jitter: float,
) -> np.ndarray:
    """Two families of nearly parallel straight streets, crossing at ~90 degrees."""
    lines = []
    for a in (angle, angle + np.pi / 2):
        k = np.arange(-int(half_extent // spacing) - 1, int(half_extent // spacing) + 2)
        offsets = k * spacing + rng.normal(0, jitter, k.size)
        skew = rng.normal(0, np.deg2rad(2.0), k.size)
        u = np.c_[np.cos(a + skew), np.sin(a + skew)]
        v = np.array([-np.sin(a), np.cos(a)])
        c = np.array([centre.x, centre.y]) + offsets[:, None] * v[None, :]
        lines.append(np.stack([c - half_extent * u, c + half_extent * u], axis=1))
    return shapely.linestrings(np.concatenate(lines))


def _roads(
    recipe: RegionRecipe,
    region: Polygon,
    sea: Polygon | None,
    hill_land: Polygon,
    towns: list[Point],
    industry: list[Point],
    villages: list[Point],
    r_town: float,
    r_ind: float,
    zone: float,
    rng: np.random.Generator,
) -> gpd.GeoDataFrame:
    """Road centre lines with their class and width, clipped to the region."""
    x0, y0, x1, y1 = region.bounds
    side = x1 - x0
    frame = region.buffer(50.0)
    if sea is not None:
        frame = frame.difference(sea)
    base = rng.uniform(0, np.pi / 2)
    records: list[tuple[LineString, RoadClass]] = []

    def add(geoms, cls: RoadClass) -> None:
        for g in np.atleast_1d(geoms):
            g = shapely.intersection(g, frame)
            for part in shapely.get_parts(g):
                if part.geom_type == "LineString" and part.length > 20.0:
                    records.append((part, cls))

    if recipe.expressway:
        a = base + rng.normal(np.pi / 4, 0.2)
        c = np.array(
            [
                rng.uniform(x0 + 0.3 * side, x1 - 0.3 * side),
                rng.uniform(y0 + 0.3 * side, y1 - 0.3 * side),
            ]
        )
        add(
            _meander(c, np.array([np.cos(a), np.sin(a)]), side * 1.5, 250 * zone, 9000 * zone, rng),
            RoadClass.EXPRESSWAY,
        )
    anchors = towns + industry
    for k in range(recipe.n_arterials):
        p = anchors[k % len(anchors)] if anchors else region.centroid
        c = np.array([p.x, p.y]) + rng.normal(0, 0.15 * r_town, 2)
        a = base + (k % 2) * np.pi / 2 + rng.normal(0, np.deg2rad(10))
        add(
            _meander(c, np.array([np.cos(a), np.sin(a)]), side * 1.5, 120 * zone, 5000 * zone, rng),
            RoadClass.ARTERIAL,
        )

    # Street grids: one orientation per district (Voronoi cell of the centres).
    districts = [(t, r_town, "town") for t in towns] + [(p, r_ind, "industry") for p in industry]
    cells = _voronoi_cells([d[0] for d in districts], region)
    for (centre, radius, kind), cell in zip(districts, cells, strict=True):
        angle = base + rng.normal(0, np.deg2rad(12))
        # Street grids stop at the foot of the hills; arterials may cross them.
        outline = _irregular_disc(centre, radius * 1.15, rng).intersection(cell)
        outline = outline.difference(hill_land)
        spacing = 480.0 if kind == "town" else 380.0
        collectors = _grid_lines(centre, angle, spacing, radius * 1.4, rng, 40.0)
        add(shapely.intersection(collectors, outline), RoadClass.COLLECTOR)
        if kind == "town":
            core = _irregular_disc(centre, radius * 0.8, rng).intersection(cell)
            core = core.difference(hill_land)
            local = _grid_lines(centre, angle, 150.0, radius, rng, 25.0)
            local = local[rng.random(local.size) > 0.1]  # some streets are missing
            add(shapely.intersection(local, core), RoadClass.LOCAL)

    # Villages: a few lanes and one road out to the network.
    main = (
        shapely.union_all([g for g, c in records if c <= RoadClass.COLLECTOR]) if records else None
    )
    for v in villages:
        for _ in range(rng.integers(2, 4)):
            a = rng.uniform(0, np.pi)
            half = rng.uniform(120, 260)
            d = np.array([np.cos(a), np.sin(a)]) * half
            add(LineString([(v.x - d[0], v.y - d[1]), (v.x + d[0], v.y + d[1])]), RoadClass.LOCAL)
        if main is not None and not main.is_empty:
            link = shapely.shortest_line(v, main)
            if link.length < 0.5 * side:
                add(link, RoadClass.LOCAL)
    geoms = [g for g, _ in records]
    classes = np.array([int(c) for _, c in records], dtype=np.uint8)
    widths = np.array([ROAD_WIDTH_M[RoadClass(c)] for c in classes])
    return gpd.GeoDataFrame({"road_class": classes, "width_m": widths, "geometry": geoms}, crs=CRS)


def _voronoi_cells(centres: list[Point], region: Polygon) -> list[Polygon]:
    """The Voronoi cell (clipped to the region, buffered) of each centre, in order."""
    if len(centres) < 2:
        return [region.buffer(2000.0)] * len(centres)
    cells = shapely.get_parts(
        shapely.voronoi_polygons(MultiPoint(centres), extend_to=region.buffer(5000.0))
    )
    out = []
    for c in centres:
        out.append(next((cell for cell in cells if cell.contains(c)), region))
    return out


# --------------------------------------------------------------------------- parcels


def subdivide(
    polygons: np.ndarray,
    target_area: np.ndarray,
    rng: np.random.Generator,
    min_area: float = 50.0,
    max_levels: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Split polygons by recursive bisection across their long axis.

    How cadastral parcels and building footprints look: rectangular-ish pieces
    whose size is set by ``target_area`` (one value per input polygon; a piece is
    split while larger than 1-2 x its target). Cuts fall between 35 % and 65 % of
    the long side with a small random skew. Vectorised over all pieces of a level.

    Returns the pieces and, for each, the index of the polygon it came from.

    Examples
    --------
    >>> pieces, src = subdivide(np.array([box(0, 0, 100, 40)]), np.array([500.0]),
    ...                         np.random.default_rng(0))
    >>> bool(abs(shapely.area(pieces).sum() - 4000.0) < 1e-6), bool((src == 0).all())
    (True, True)
    >>> bool(shapely.area(pieces).max() <= 1000.0)
    True
    """
    geoms = np.asarray(polygons, dtype=object)
    src = np.arange(geoms.size)
    out_geoms, out_src = [], []
    for _ in range(max_levels):
        if geoms.size == 0:
            break
        area = shapely.area(geoms)
        done = area <= target_area[src] * rng.uniform(1.0, 2.0, geoms.size)
        envelope = shapely.oriented_envelope(geoms)
        done |= shapely.get_num_coordinates(envelope) != 5  # degenerate: leave as is
        out_geoms.append(geoms[done])
        out_src.append(src[done])
        geoms, src, envelope = geoms[~done], src[~done], envelope[~done]
        if geoms.size == 0:
            break
        a, b = _halves(envelope, rng)
        pieces, idx = shapely.get_parts(
            np.concatenate([shapely.intersection(geoms, a), shapely.intersection(geoms, b)]),
            return_index=True,
        )
        parent = np.concatenate([src, src])[idx]
        keep = (shapely.get_type_id(pieces) == 3) & (shapely.area(pieces) >= min_area)
        geoms, src = pieces[keep], parent[keep]
    out_geoms.append(geoms)
    out_src.append(src)
    return np.concatenate(out_geoms), np.concatenate(out_src)


def _halves(envelope: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two half-plane rectangles that cut each oriented envelope across its long side."""
    corners = shapely.get_coordinates(envelope).reshape(-1, 5, 2)[:, :4]
    e1 = corners[:, 1] - corners[:, 0]
    e2 = corners[:, 2] - corners[:, 1]
    l1 = np.linalg.norm(e1, axis=1)
    l2 = np.linalg.norm(e2, axis=1)
    first = (l1 >= l2)[:, None]
    long_len = np.maximum(l1, l2)
    short_len = np.minimum(l1, l2)
    u = np.where(first, e1, e2) / np.maximum(long_len, 1e-9)[:, None]
    skew = rng.normal(0, np.deg2rad(3.0), u.shape[0])
    cos, sin = np.cos(skew)[:, None], np.sin(skew)[:, None]
    u = np.c_[u[:, :1] * cos - u[:, 1:] * sin, u[:, :1] * sin + u[:, 1:] * cos]
    v = np.c_[-u[:, 1], u[:, 0]]
    centre = corners.mean(axis=1)
    cut = centre + u * ((rng.uniform(0.35, 0.65, u.shape[0]) - 0.5) * long_len)[:, None]
    big = (long_len + short_len + 10.0)[:, None]
    a = np.stack(
        [cut + v * big, cut - v * big, cut - v * big - u * big, cut + v * big - u * big], 1
    )
    b = np.stack(
        [cut + v * big, cut - v * big, cut - v * big + u * big, cut + v * big + u * big], 1
    )
    return shapely.polygons(a), shapely.polygons(b)


CLAIM_ORDER = ("forest", "industrial", "residential", "pond", "paddy", "green")
KIND_CODE = {
    "forest": LandUse.FOREST,
    "industrial": LandUse.INDUSTRIAL,
    "residential": LandUse.RESIDENTIAL,
    "pond": LandUse.WATER,
    "paddy": LandUse.PADDY,
    "green": LandUse.GREEN_SPACE,
    "farmland": LandUse.DRY_FARMLAND_ORCHARD,
}
"""Parcel kinds (the keys of a recipe's shares) and their land-use codes; ponds are water."""


def _assign_landuse(
    recipe: RegionRecipe,
    area: np.ndarray,
    s: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    """Land use per parcel: classes claim the best-scoring parcels up to their area share.

    Returns an object array of keys ("forest", ..., "pond", "farmland"); ponds
    become water in the raster.
    """
    n = area.size

    def noise(sd: float) -> np.ndarray:
        return rng.normal(0, sd, n)

    urban = np.maximum(s["town"], s["village"])
    score = {
        "forest": s["hill"] + 0.3 * s["n_forest"] + noise(0.05),
        "industrial": s["industrial"] + 0.25 * s["arterial"] + 0.12 * s["n_urban"] + noise(0.06),
        "residential": urban + 0.15 * s["arterial"] - 0.1 * s["n_urban"] + noise(0.06),
        "pond": s["floodplain"] * (1 - np.clip(urban, 0, 1)) + 0.3 * s["n_pond"] + noise(0.05),
        "paddy": s["floodplain"] - 0.8 * s["hill"] + 0.35 * s["n_paddy"] + noise(0.05),
        "green": 0.4 * np.clip(urban + s["industrial"], 0, 1) + 0.3 * s["n_green"] + noise(0.1),
    }
    out = np.full(n, "farmland", dtype=object)
    free = np.ones(n, bool)
    total = area.sum()
    for key in CLAIM_ORDER:
        quota = recipe.share[key] * total
        order = np.argsort(-score[key], kind="stable")
        order = order[free[order]]
        if order.size == 0:
            continue
        cum = np.cumsum(area[order])
        take = order[: max(1, int(np.searchsorted(cum, quota)))]
        out[take] = key
        free[take] = False
    if not free.any():  # farmland needs a parcel too: the smallest green one
        greens = np.flatnonzero(out == "green")
        out[greens[np.argmin(area[greens])]] = "farmland"
    return out


def _buildings(parcels: gpd.GeoDataFrame, rng: np.random.Generator) -> gpd.GeoDataFrame:
    """Factory sheds: industrial parcels minus a yard, cut into large rectangular roofs.

    Houses in residential parcels are smaller than a pixel; their roofs are drawn
    as a sub-pixel pattern by :mod:`~soilsource.synth.spectra` instead.
    """
    ind = parcels[parcels["kind"] == "industrial"]
    if ind.empty:
        return gpd.GeoDataFrame({"parcel_id": [], "geometry": []}, crs=CRS)
    yard = rng.uniform(6.0, 20.0, len(ind))
    shrunk = shapely.buffer(ind.geometry.values, -yard, join_style="mitre")
    ok = ~shapely.is_empty(shrunk)
    shrunk, ids = shrunk[ok], ind.index.to_numpy()[ok]
    pieces, src = subdivide(shrunk, rng.uniform(1500.0, 6000.0, shrunk.size), rng, min_area=80.0)
    pieces = shapely.buffer(pieces, -3.0, join_style="mitre")
    good = (~shapely.is_empty(pieces)) & (shapely.area(pieces) > 80.0)
    good &= rng.random(pieces.size) < 0.85  # some plots are open yards or storage
    buildings = gpd.GeoDataFrame({"parcel_id": ids[src[good]], "geometry": pieces[good]}, crs=CRS)
    buildings.index = np.arange(1, len(buildings) + 1)
    buildings.index.name = "building_id"
    return buildings
