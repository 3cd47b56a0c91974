"""Hotspots: threshold, polygons with the right area and class, tiles, files, bad inputs."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from functools import partial

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from rasterio.transform import from_origin
from scipy import ndimage

import tinyinputs
from soilsource.analysis.hotspots import (
    COLUMNS,
    hotspot_mask,
    hotspot_polygons,
    hotspot_threshold,
    raster_hotspot_threshold,
    region_hotspots,
    write_hotspots,
)
from soilsource.errors import InputError

ORIGIN_XY = (500_000.0, 2_560_000.0)
TRANSFORM = from_origin(*ORIGIN_XY, 10.0, 10.0)
write_raster = partial(tinyinputs.write_raster, origin=ORIGIN_XY)
CRS = "EPSG:32649"
CLASSES = {1: "industrial", 2: "residential", 3: "paddy"}


def two_blobs():
    """Low noise everywhere, two hot rectangles, a NaN band; land use in vertical stripes."""
    rng = np.random.default_rng(0)
    s = rng.uniform(-0.01, 0.01, (60, 80)).astype(np.float32)
    s[:5] = np.nan
    s[10:20, 12:22] = 1.0  # 100 px: 30 of class 1 (cols < 15), 70 of class 2
    s[40:46, 50:60] = 0.5  # 60 px, all class 3
    landuse = np.ones((60, 80), np.int64)
    landuse[:, 15:40] = 2
    landuse[:, 40:] = 3
    return s, landuse


def test_threshold_is_the_kth_largest_covered_value():
    s = np.array([[0.9, 0.1, np.nan], [0.5, 0.7, 0.3]], np.float32)
    assert hotspot_threshold(s, top_share=0.4) == pytest.approx(0.7)  # k = ceil(2.0) = 2
    assert hotspot_threshold(s, top_share=0.3) == pytest.approx(0.7)  # k = ceil(1.5) = 2
    assert hotspot_threshold(s, top_share=1.0) == pytest.approx(0.1)
    assert hotspot_threshold(np.full((3, 3), np.nan)) == np.inf


def test_only_positive_sensitivity_is_hot():
    s = np.array([-0.3, -0.1, 0.0, 0.2])
    assert hotspot_mask(s, hotspot_threshold(s, top_share=1.0)).tolist() == [0, 0, 0, 1]
    everything_negative = -np.abs(np.random.default_rng(0).normal(size=(20, 20)))
    frame = hotspot_polygons(everything_negative, transform=TRANSFORM, crs=CRS, top_share=0.5)
    assert len(frame) == 0 and list(frame.columns) == [*COLUMNS, "geometry"]


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_top_share_out_of_range_is_refused(share):
    with pytest.raises(ValueError, match="top_share"):
        hotspot_threshold(np.ones(10), top_share=share)


def test_polygons_have_the_right_area_and_dominant_class():
    s, landuse = two_blobs()
    covered = np.isfinite(s).sum()
    frame = hotspot_polygons(
        s, landuse, CLASSES, transform=TRANSFORM, crs=CRS, region="north", top_share=160 / covered
    )
    assert list(frame.columns) == [*COLUMNS, "geometry"]
    assert frame.crs.to_epsg() == 32649
    assert frame.hotspot_id.tolist() == [1, 2]
    first, second = frame.iloc[0], frame.iloc[1]
    assert (first.n_pixels, first.area_m2, first.mean_sensitivity) == (100, 10_000.0, 1.0)
    assert first.landuse == "residential" and first.landuse_share == pytest.approx(0.7)
    assert (second.n_pixels, second.area_m2) == (60, 6_000.0)
    assert second.landuse == "paddy" and second.landuse_share == 1.0
    assert second.mean_sensitivity == pytest.approx(0.5) and second.max_sensitivity == 0.5
    np.testing.assert_allclose(frame.area, frame.area_m2)
    # Map coordinates: the first blob is rows 10-19, cols 12-21 of the grid.
    assert frame.geometry.iloc[0].bounds == pytest.approx(
        (500_120.0, 2_560_000.0 - 200, 500_220.0, 2_560_000.0 - 100)
    )
    assert set(frame.region) == {"north"}


def test_dominant_class_ties_go_to_the_lowest_code_and_unknown_codes_are_ignored():
    s = np.zeros((10, 10), np.float32)
    s[2:4, 2:6] = 1.0  # 8 px: 4 of code 2, 2 of code 1, 2 of code 99 (not in the table)
    landuse = np.full((10, 10), 2)
    landuse[2:4, 4] = 1
    landuse[2:4, 5] = 99
    frame = hotspot_polygons(
        s, landuse, {1: "a", 2: "b"}, transform=TRANSFORM, crs=CRS, threshold=0.5
    )
    assert frame.landuse.tolist() == ["b"] and frame.landuse_share.tolist() == [0.5]
    landuse[2:4, 3] = 1  # now 2 px of code 2, 4 of code 1
    frame = hotspot_polygons(
        s, landuse, {1: "a", 2: "b"}, transform=TRANSFORM, crs=CRS, threshold=0.5
    )
    assert frame.landuse.tolist() == ["a"]
    without = hotspot_polygons(s, transform=TRANSFORM, crs=CRS, threshold=0.5)
    assert without.landuse.isna().all() and without.landuse_share.isna().all()


def test_small_specks_are_dropped_and_corners_do_not_connect():
    s = np.zeros((12, 12), np.float32)
    s[1, 1:4] = 1.0  # 3 px: dropped with min_pixels=4
    s[5, 5:9] = 1.0  # 4 px: kept
    s[8, 8] = s[9, 9] = 1.0  # diagonal neighbours: two 1-px pieces, not one
    kept = hotspot_polygons(s, transform=TRANSFORM, crs=CRS, threshold=0.5)
    assert kept.n_pixels.tolist() == [4]
    everything = hotspot_polygons(s, transform=TRANSFORM, crs=CRS, threshold=0.5, min_pixels=1)
    assert sorted(everything.n_pixels.tolist()) == [1, 1, 3, 4]
    with pytest.raises(ValueError, match="min_pixels"):
        hotspot_polygons(s, transform=TRANSFORM, crs=CRS, threshold=0.5, min_pixels=0)


def test_tiles_do_not_change_the_result():
    rng = np.random.default_rng(3)
    s = ndimage.gaussian_filter(rng.normal(size=(90, 110)), 3).astype(np.float32)
    s[:, :7] = np.nan
    s[30:60, 20:90] = 1.0  # a ring with a hole, across many small tiles
    s[40:50, 30:80] = -1.0
    landuse = rng.integers(1, 4, s.shape)
    kwargs = {"transform": TRANSFORM, "crs": CRS, "top_share": 0.2, "min_pixels": 1}
    whole = hotspot_polygons(s, landuse, CLASSES, tile_px=1024, **kwargs)
    tiled = hotspot_polygons(s, landuse, CLASSES, tile_px=16, **kwargs)
    assert len(whole) == len(tiled) > 5
    assert whole.drop(columns="geometry").equals(tiled.drop(columns="geometry"))
    assert whole.geometry.geom_equals(tiled.geometry).all()
    assert whole.geometry.is_valid.all() and (whole.geom_type == "Polygon").all()
    ring = whole.loc[whole.n_pixels.idxmax()].geometry
    assert len(ring.interiors) == 1 and ring.area == pytest.approx(100 * (30 * 70 - 10 * 50))
    # Every hot pixel is in exactly one polygon, and pixels add up.
    hot = hotspot_mask(s, hotspot_threshold(s, 0.2))
    assert whole.n_pixels.sum() == hot.sum()


def test_windowed_threshold_equals_the_in_memory_one(tmp_path):
    rng = np.random.default_rng(5)
    s = rng.normal(size=(70, 50)).astype(np.float32)
    s[rng.random(s.shape) < 0.3] = np.nan
    s[:10, :10] = 0.25  # ties
    s[10:12, :] = -0.0
    path = write_raster(tmp_path / "s.tif", s, nodata=np.nan)
    for share in (0.001, 0.05, 0.2, 0.5, 0.9, 1.0):
        assert raster_hotspot_threshold(path, share, tile_px=16) == hotspot_threshold(s, share)
    empty = write_raster(tmp_path / "e.tif", np.full((4, 4), np.nan, np.float32), nodata=np.nan)
    assert raster_hotspot_threshold(empty, 0.05) == np.inf


def test_region_hotspots_from_files_equal_the_arrays(tmp_path):
    s, landuse = two_blobs()
    landuse = landuse.astype(np.uint8)
    landuse[12, 16] = 0  # land-use nodata: unknown, counted in the share's denominator
    s_path = write_raster(tmp_path / "s.tif", s, nodata=np.nan)
    lu_path = write_raster(tmp_path / "lu.tif", landuse, nodata=0)
    kwargs = {"region": "north", "threshold": 0.4}
    from_files = region_hotspots(s_path, lu_path, CLASSES, tile_px=16, **kwargs)
    masked = landuse.astype(np.int64)
    masked[12, 16] = -1
    in_memory = hotspot_polygons(s, masked, CLASSES, transform=TRANSFORM, crs=CRS, **kwargs)
    assert from_files.drop(columns="geometry").equals(in_memory.drop(columns="geometry"))
    assert from_files.geometry.geom_equals(in_memory.geometry).all()
    assert from_files.landuse_share.iloc[0] == pytest.approx(0.69)  # 69 residential of 100
    assert from_files.crs.to_epsg() == 32649


def test_land_use_off_the_imagery_grid_is_an_input_error(tmp_path):
    s, landuse = two_blobs()
    s_path = write_raster(tmp_path / "s.tif", s, nodata=np.nan)
    shifted = (500_005.0, 2_560_000.0)
    bad = write_raster(tmp_path / "lu.tif", landuse.astype(np.uint8), nodata=0, origin=shifted)
    with pytest.raises(InputError, match="grid") as info:
        region_hotspots(s_path, bad, CLASSES)
    assert info.value.source.endswith("lu.tif")
    small = write_raster(tmp_path / "lu2.tif", landuse[:50].astype(np.uint8), nodata=0)
    with pytest.raises(InputError, match="not the imagery grid"):
        region_hotspots(s_path, small, CLASSES)
    good = write_raster(tmp_path / "lu3.tif", landuse.astype(np.uint8), nodata=0)
    with pytest.raises(InputError, match="band 2"):
        region_hotspots(s_path, good, CLASSES, landuse_band=2)
    (tmp_path / "junk.tif").write_text("not a raster")
    with pytest.raises(InputError, match="not a readable raster"):
        region_hotspots(s_path, tmp_path / "junk.tif", CLASSES)


def test_geopackage_holds_all_regions_in_one_layer_with_the_crs(tmp_path):
    s, landuse = two_blobs()
    north = hotspot_polygons(
        s, landuse, CLASSES, transform=TRANSFORM, crs=CRS, region="north", top_share=0.05
    )
    south = hotspot_polygons(
        s[::-1], landuse, CLASSES, transform=TRANSFORM, crs=CRS, region="south", top_share=0.05
    )
    path = write_hotspots(tmp_path / "hotspots.gpkg", [north, south])
    assert pyogrio.list_layers(path).tolist() == [["hotspots", "Polygon"], ["layer_styles", None]]
    back = gpd.read_file(path, layer="hotspots")
    assert back.crs.to_epsg() == 32649
    # QGIS reads the layer's CRS from the GeoPackage tables: an EPSG-registered srs.
    with closing(sqlite3.connect(path)) as db:
        srs = db.execute("SELECT srs_id FROM gpkg_geometry_columns").fetchone()[0]
        organisation = db.execute(
            "SELECT organization, organization_coordsys_id FROM gpkg_spatial_ref_sys "
            "WHERE srs_id = ?",
            (srs,),
        ).fetchone()
    assert organisation == ("EPSG", 32649)
    assert list(back.columns) == [*COLUMNS, "geometry"]
    assert back.region.value_counts().to_dict() == {"north": len(north), "south": len(south)}
    np.testing.assert_allclose(back.area_m2, back.area)
    assert [p.name for p in tmp_path.iterdir()] == ["hotspots.gpkg"]
    # rank (1 = strongest) and centroid per region
    for _, group in back.groupby("region"):
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
    np.testing.assert_allclose(back.x, back.centroid.x)
    np.testing.assert_allclose(back.y, back.centroid.y)


def test_geopackage_carries_its_qgis_style_in_layer_styles(tmp_path):
    """QGIS applies the default style of a layer from the GeoPackage's layer_styles table."""
    import xml.etree.ElementTree as ET

    s, landuse = two_blobs()
    north = hotspot_polygons(s, landuse, CLASSES, transform=TRANSFORM, crs=CRS, region="north")
    path = write_hotspots(tmp_path / "hotspots.gpkg", [north])
    with closing(sqlite3.connect(path)) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(layer_styles)")]
        row = db.execute(
            "SELECT f_table_name, f_geometry_column, styleName, styleQML, useAsDefault "
            "FROM layer_styles"
        ).fetchall()
    # the columns QGIS writes when it saves a style into a GeoPackage
    assert {"f_table_catalog", "f_table_schema", "f_table_name", "f_geometry_column",
            "styleName", "styleQML", "styleSLD", "useAsDefault", "description", "owner",
            "ui", "update_time"} <= set(columns)  # fmt: skip
    assert len(row) == 1
    table, geometry, _, qml, default = row[0]
    assert (table, geometry, default) == ("hotspots", "geom", 1)
    root = ET.fromstring(qml.split("\n", 1)[1])
    assert root.tag == "qgis"
    assert root.find("renderer-v2").get("type") == "singleSymbol"
    fill = {o.get("name"): o.get("value") for o in root.iter("Option")}
    assert fill["style"] == "no" and fill["outline_color"].endswith(",255")
    assert root.find("labeling/settings/text-style").get("fieldName") == "rank"


def test_an_empty_geopackage_is_still_a_valid_layer(tmp_path):
    path = write_hotspots(tmp_path / "hotspots.gpkg", [], crs=CRS)
    assert pyogrio.list_layers(path)[0][0] == "hotspots"
    back = gpd.read_file(path, layer="hotspots")
    assert len(back) == 0 and back.crs.to_epsg() == 32649


def test_regions_in_different_crs_are_refused(tmp_path):
    s, _ = two_blobs()
    a = hotspot_polygons(s, transform=TRANSFORM, crs=CRS, top_share=0.05)
    b = hotspot_polygons(s, transform=TRANSFORM, crs="EPSG:32650", top_share=0.05)
    with pytest.raises(ValueError, match="CRS"):
        write_hotspots(tmp_path / "h.gpkg", [a, b])
    assert not (tmp_path / "h.gpkg").exists()


def test_vector_land_use_is_put_on_the_grid_by_the_inputs_step(tmp_path):
    from shapely.geometry import box

    from soilsource.config import LanduseConfig
    from soilsource.inputs.landuse import open_landuse

    s, landuse = two_blobs()
    s_path = write_raster(tmp_path / "s.tif", s, nodata=np.nan)
    # Land use as polygons: the three vertical stripes of two_blobs(), in map coordinates.
    left, top = TRANSFORM.c, TRANSFORM.f
    stripes = [(1, 0, 15), (2, 15, 40), (3, 40, 80)]
    polygons = gpd.GeoDataFrame(
        {"name": [CLASSES[c] for c, _, _ in stripes]},
        geometry=[box(left + 10 * a, top - 600, left + 10 * b, top) for _, a, b in stripes],
        crs=CRS,
    )
    polygons.to_file(tmp_path / "landuse.gpkg")
    table = tmp_path / "classes.csv"
    table.write_text("code,name\n" + "".join(f"{c},{n}\n" for c, n in CLASSES.items()))
    source = open_landuse(
        LanduseConfig(path=tmp_path / "landuse.gpkg", classes=table, field="name"), "north"
    )
    from_vector = region_hotspots(s_path, source, source.classes, threshold=0.4, tile_px=16)
    in_memory = hotspot_polygons(s, landuse, CLASSES, transform=TRANSFORM, crs=CRS, threshold=0.4)
    assert from_vector.drop(columns="geometry").equals(in_memory.drop(columns="geometry"))
