"""Inputs: samples in every format and CRS, imagery resolution and metadata, land use."""

from __future__ import annotations

from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from affine import Affine
from rasterio.crs import CRS

from soilsource.config import ImageryConfig, LanduseConfig, SamplesConfig
from soilsource.errors import InputError
from soilsource.inputs import (
    assign_rasters,
    describe_raster,
    iter_windows,
    open_landuse,
    read_classes,
    read_samples,
    reproject_points,
    resolve_imagery,
)
from soilsource.inputs.imagery import same_grid
from tinyinputs import (
    CRS_UTM,
    ORIGIN,
    PIXEL_M,
    SIZE,
    imagery_data,
    landuse_data,
    sample_table,
    write_raster,
)

# --- samples ---------------------------------------------------------------------------


def csv_spec(path, **kw) -> SamplesConfig:
    base = {"x": "lon", "y": "lat", "crs": "EPSG:4326", "value": "cd_mgkg"}
    return SamplesConfig(path=path, **(base | kw))


@pytest.fixture
def table():
    return sample_table(n=12)


def test_csv_standard_columns(tmp_path, table):
    table.to_csv(tmp_path / "s.csv", index=False)
    spec = csv_spec(tmp_path / "s.csv", id="sample_id", region="region", ph="ph", paddy="is_paddy")
    samples = read_samples(spec)
    assert list(samples.columns) == [
        "sample_id", "region", "value", "ph", "paddy", "orchard", "row", "geometry",
    ]  # fmt: skip
    assert samples["sample_id"].tolist() == table["sample_id"].tolist()
    assert samples["region"].tolist() == table["region"].tolist()
    np.testing.assert_allclose(samples["value"], table["cd_mgkg"])
    assert samples["paddy"].tolist() == table["is_paddy"].tolist()
    assert not samples["orchard"].any()
    assert samples["row"].tolist() == list(range(1, 13))
    assert samples.crs.to_epsg() == 4326
    assert samples.attrs["columns"]["value"] == "cd_mgkg"


def test_csv_without_optional_columns(tmp_path, table):
    table[["lon", "lat", "cd_mgkg"]].to_csv(tmp_path / "s.csv", index=False)
    samples = read_samples(csv_spec(tmp_path / "s.csv"))
    assert samples["region"].unique().tolist() == ["all"]
    assert samples["sample_id"].tolist() == [str(i) for i in range(1, 13)]
    assert samples["ph"].isna().all()
    assert not samples["paddy"].any()


@pytest.mark.parametrize(("suffix", "layer"), [(".gpkg", None), (".geojson", None), (".shp", None)])
def test_vector_formats_in_another_crs(tmp_path, table, suffix, layer):
    points = gpd.GeoDataFrame(
        table.drop(columns=["lon", "lat"]),
        geometry=gpd.points_from_xy(table["lon"], table["lat"]),
        crs="EPSG:4326",
    )
    if suffix != ".geojson":  # GeoJSON is WGS84 by definition
        points = points.to_crs(CRS_UTM)
    path = tmp_path / f"s{suffix}"
    points.rename(columns={"sample_id": "sid"}).to_file(path, engine="pyogrio")
    samples = read_samples(SamplesConfig(path=path, value="cd_mgkg", id="sid", region="region"))
    x, y = reproject_points(samples.geometry.x, samples.geometry.y, samples.crs, "EPSG:4326")
    np.testing.assert_allclose(x, table["lon"], atol=1e-7)
    np.testing.assert_allclose(y, table["lat"], atol=1e-7)
    assert samples["sample_id"].tolist() == table["sample_id"].tolist()


def test_vector_without_crs_uses_the_configured_one(tmp_path, table):
    points = gpd.GeoDataFrame(
        table[["cd_mgkg"]], geometry=gpd.points_from_xy(table["lon"], table["lat"])
    )
    points.to_file(tmp_path / "s.shp", engine="pyogrio")
    with pytest.raises(InputError, match="has no CRS"):
        read_samples(SamplesConfig(path=tmp_path / "s.shp", value="cd_mgkg"))
    spec = SamplesConfig(path=tmp_path / "s.shp", value="cd_mgkg", crs="EPSG:4326")
    assert read_samples(spec).crs.to_epsg() == 4326


def test_vector_polygons_are_refused(tmp_path, table):
    points = gpd.GeoDataFrame(
        table[["cd_mgkg"]],
        geometry=gpd.points_from_xy(table["lon"], table["lat"]).buffer(0.001),
        crs="EPSG:4326",
    )
    points.to_file(tmp_path / "s.gpkg", engine="pyogrio")
    with pytest.raises(InputError, match=r"geometry: rows 1, 2, .*Polygon, expected points"):
        read_samples(SamplesConfig(path=tmp_path / "s.gpkg", value="cd_mgkg"))


@pytest.mark.parametrize(
    ("column", "cells", "message"),
    [
        ("cd_mgkg", {1: "x"}, "column 'cd_mgkg': row 2: not a number"),
        ("ph", {0: "15"}, "column 'ph': row 1: pH outside 0-14"),
        ("ph", {0: "acid"}, "column 'ph': row 1: pH is not a number"),
        ("is_paddy", {2: "maybe"}, "column 'is_paddy': row 3: not a yes/no value"),
        ("region", {3: ""}, "column 'region': row 4: missing region"),
        ("sample_id", {3: ""}, "column 'sample_id': row 4: missing sample id"),
        ("lon", {5: "500"}, "row 6: impossible coordinates"),
    ],
)
def test_bad_cells_name_column_and_rows(tmp_path, table, column, cells, message):
    table = table.astype(str)
    for row, text in cells.items():
        table.loc[row, column] = text
    table.to_csv(tmp_path / "s.csv", index=False)
    spec = csv_spec(tmp_path / "s.csv", id="sample_id", region="region", ph="ph", paddy="is_paddy")
    with pytest.raises(InputError) as info:
        read_samples(spec)
    assert message in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "s.csv"))


def test_boolean_spellings(tmp_path, table):
    table["is_paddy"] = ["Yes", "no", "1", "0", "TRUE", "false", "y", "n", "t", "f", "1.0", "0.0"]
    table.to_csv(tmp_path / "s.csv", index=False)
    samples = read_samples(csv_spec(tmp_path / "s.csv", paddy="is_paddy"))
    assert samples["paddy"].tolist() == [True, False] * 6


def test_integer_ids_with_gaps_stay_integers(tmp_path, table):
    table["sample_id"] = [1, 2, 3, None, 5, 6, 7, 8, 9, 10, 11, 12]
    table["sample_id"] = table["sample_id"].astype(float)
    table = table.drop(index=3)
    table.to_csv(tmp_path / "s.csv", index=False)
    samples = read_samples(csv_spec(tmp_path / "s.csv", id="sample_id"))
    assert samples["sample_id"].tolist()[:4] == ["1", "2", "3", "5"]


def test_empty_file_and_directory(tmp_path):
    (tmp_path / "s.csv").write_text("lon,lat,cd_mgkg\n")
    with pytest.raises(InputError, match="no samples"):
        read_samples(csv_spec(tmp_path / "s.csv"))
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(InputError, match="not a file"):
        read_samples(csv_spec(tmp_path / "d.csv"))


# --- imagery ---------------------------------------------------------------------------


def test_band_names_nodata_scale_offset(tmp_path):
    path = write_raster(
        tmp_path / "a.tif",
        imagery_data(),
        nodata=0,
        descriptions=("blue", "", "nir"),
        scales=(0.0001, 0.0001, 0.0001),
        offsets=(-0.1, -0.1, -0.1),
    )
    info = describe_raster(path)
    assert info.band_names == ("blue", "band_2", "nir")
    assert info.nodata == (0.0, 0.0, 0.0)
    assert info.scales == (0.0001,) * 3 and info.offsets == (-0.1,) * 3
    assert info.pixel_size_m == PIXEL_M
    assert info.bounds == (
        ORIGIN[0],
        ORIGIN[1] - SIZE * PIXEL_M,
        ORIGIN[0] + SIZE * PIXEL_M,
        ORIGIN[1],
    )
    assert info.describe_crs() == "EPSG:32649 (WGS 84 / UTM zone 49N)"


def test_geographic_raster_pixel_size(tmp_path):
    path = write_raster(
        tmp_path / "g.tif", imagery_data(), crs="EPSG:4326", origin=(113.0, 23.0), pixel=0.0001
    )
    size = describe_raster(path).pixel_size_m
    assert 10.0 < size < 11.2  # 0.0001 deg: 11.1 m north-south, 10.2 m east-west at 23 N


def test_raster_without_crs(tmp_path):
    import rasterio

    with rasterio.open(
        tmp_path / "n.tif", "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8"
    ) as dst:
        dst.write(np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(InputError, match="has no CRS"):
        describe_raster(tmp_path / "n.tif")


def test_template_list_and_single(tmp_path):
    for region in ("a", "b"):
        write_raster(tmp_path / "img" / f"{region}.tif", imagery_data())
    templated = resolve_imagery(ImageryConfig(path=tmp_path / "img" / "{region}.tif"), ["a", "b"])
    assert [r[0].path.name for r in templated.values()] == ["a.tif", "b.tif"]
    listed = resolve_imagery(
        ImageryConfig(path=[tmp_path / "img" / "a.tif", tmp_path / "img" / "b.tif"]), ["x"]
    )
    assert len(listed["x"]) == 2
    with pytest.raises(InputError, match="no raster for region 'c'"):
        resolve_imagery(ImageryConfig(path=tmp_path / "img" / "{region}.tif"), ["a", "c"])


def test_list_with_different_band_counts(tmp_path):
    write_raster(tmp_path / "a.tif", imagery_data())
    write_raster(tmp_path / "b.tif", imagery_data()[:2])
    with pytest.raises(InputError, match="every imagery raster needs the same bands"):
        resolve_imagery(ImageryConfig(path=[tmp_path / "a.tif", tmp_path / "b.tif"]), ["x"])


def test_assign_rasters_reprojects_points(tmp_path):
    west = describe_raster(write_raster(tmp_path / "w.tif", imagery_data()))
    east_origin = (ORIGIN[0] + SIZE * PIXEL_M, ORIGIN[1])
    east = describe_raster(write_raster(tmp_path / "e.tif", imagery_data(), origin=east_origin))
    x = np.array([ORIGIN[0] + 5, ORIGIN[0] + SIZE * PIXEL_M + 5, ORIGIN[0] - 100])
    y = np.full(3, ORIGIN[1] - 5)
    lon, lat = reproject_points(x, y, CRS_UTM, "EPSG:4326")
    assert assign_rasters(lon, lat, "EPSG:4326", [west, east]).tolist() == [0, 1, -1]


# --- land use --------------------------------------------------------------------------


def test_classes_table(tmp_path):
    good = tmp_path / "c.csv"
    good.write_text("code,name\n1,industrial\n3,forest\n")
    assert read_classes(good) == {1: "industrial", 3: "forest"}
    for text, message in [
        ("id,name\n1,a\n", "column 'code'"),
        ("code,name\n1,a\n1,b\n", "rows 1, 2: duplicate code"),
        ("code,name\n1.5,a\n", "row 1: not a positive integer"),
    ]:
        good.write_text(text)
        with pytest.raises(InputError, match=message):
            read_classes(good)


def test_landuse_raster_on_the_same_grid(tmp_path):
    grid = describe_raster(write_raster(tmp_path / "img.tif", imagery_data()))
    write_raster(tmp_path / "lu.tif", landuse_data(), nodata=0)
    (tmp_path / "c.csv").write_text("code,name\n1,a\n2,b\n3,c\n")
    landuse = open_landuse(LanduseConfig(path=tmp_path / "lu.tif", classes=tmp_path / "c.csv"), "x")
    assert landuse.codes_present() == {1, 2, 3}
    np.testing.assert_array_equal(landuse.on_grid(grid), landuse_data().astype(np.int32))
    windows = list(iter_windows(grid, 24))
    mosaic = np.zeros((SIZE, SIZE), np.int32)
    for window in windows:
        rows, cols = window.toslices()
        mosaic[rows, cols] = landuse.on_grid(grid, window)
    np.testing.assert_array_equal(mosaic, landuse_data())


def test_landuse_raster_on_another_grid_is_resampled(tmp_path):
    grid = describe_raster(write_raster(tmp_path / "img.tif", imagery_data()))
    coarse = landuse_data()[:, ::2][::2]  # 20 m pixels over the same area
    write_raster(tmp_path / "lu.tif", coarse, nodata=0, pixel=2 * PIXEL_M, block=16)
    landuse = open_landuse(LanduseConfig(path=tmp_path / "lu.tif"), "x")
    fine = landuse.on_grid(grid)
    np.testing.assert_array_equal(fine, np.kron(coarse, np.ones((2, 2), np.uint8)))


def test_landuse_vector_is_rasterised(tmp_path):
    grid = describe_raster(write_raster(tmp_path / "img.tif", imagery_data()))
    left, bottom, right, top = grid.bounds
    middle = (left + right) / 2
    from shapely.geometry import box

    polygons = gpd.GeoDataFrame(
        {"cls": ["industrial", "forest"]},
        geometry=[box(left, bottom, middle, top), box(middle, bottom, right, top)],
        crs=CRS_UTM,
    ).to_crs("EPSG:4326")
    polygons.to_file(tmp_path / "lu.gpkg", engine="pyogrio")
    (tmp_path / "c.csv").write_text("code,name\n4,industrial\n9,forest\n")
    spec = LanduseConfig(path=tmp_path / "lu.gpkg", field="cls", classes=tmp_path / "c.csv")
    codes = open_landuse(spec, "x").on_grid(grid)
    assert (codes[:, :30] == 4).all() and (codes[:, 34:] == 9).all()
    spec = LanduseConfig(path=tmp_path / "lu.gpkg", field="cls")
    landuse = open_landuse(spec, "x")
    assert landuse.classes == {1: "forest", 2: "industrial"}
    with pytest.raises(InputError, match="field 'kind': not found"):
        open_landuse(LanduseConfig(path=tmp_path / "lu.gpkg", field="kind"), "x")
    with pytest.raises(InputError, match=r"key 'landuse\.field'"):
        open_landuse(LanduseConfig(path=tmp_path / "lu.gpkg"), "x")


def test_landuse_codes_missing_from_table_and_float_rasters(tmp_path):
    write_raster(tmp_path / "lu.tif", landuse_data(), nodata=0)
    (tmp_path / "c.csv").write_text("code,name\n1,a\n")
    spec = LanduseConfig(path=tmp_path / "lu.tif", classes=tmp_path / "c.csv")
    with pytest.raises(InputError, match=r"codes 2, 3: not in the class table c.csv"):
        open_landuse(spec, "x")
    write_raster(tmp_path / "f.tif", landuse_data().astype(np.float32))
    with pytest.raises(InputError, match="must be integers"):
        open_landuse(LanduseConfig(path=tmp_path / "f.tif"), "x")


def test_landuse_template_without_file(tmp_path):
    spec = LanduseConfig(path=tmp_path / "{region}.tif")
    with pytest.raises(InputError, match="no land-use file for region 'north'"):
        open_landuse(spec, "north")


def test_sample_table_is_inside_the_tiny_raster():
    """Guard for the shared fixture: every sample lies on the raster."""
    table = sample_table()
    x, y = reproject_points(table["lon"], table["lat"], "EPSG:4326", CRS_UTM)
    assert pd.Series(x).between(ORIGIN[0], ORIGIN[0] + SIZE * PIXEL_M).all()
    assert pd.Series(y).between(ORIGIN[1] - SIZE * PIXEL_M, ORIGIN[1]).all()


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({}, True),
        ({"transform": Affine(10, 0, 500000 + 1e-9, 0, -10, 2e6)}, True),  # round-off
        ({"crs": None}, True),  # a file without CRS is taken to be on the other's grid
        ({"transform": Affine(10, 0, 500005, 0, -10, 2e6)}, False),  # half a pixel east
        ({"transform": Affine(20, 0, 500000, 0, -20, 2e6)}, False),  # other pixel size
        ({"width": 5}, False),
        ({"crs": CRS.from_epsg(32650)}, False),
    ],
)
def test_same_grid_is_one_rule(change, same):
    grid = {
        "width": 4,
        "height": 3,
        "transform": Affine(10, 0, 500000, 0, -10, 2e6),
        "crs": CRS.from_epsg(32649),
    }
    a, b = SimpleNamespace(**grid), SimpleNamespace(**{**grid, **change})
    assert same_grid(a, b) is same
    assert same_grid(b, a) is same
