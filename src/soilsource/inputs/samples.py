"""Soil samples from the user's file, as one GeoDataFrame with standard columns.

Accepts CSV (coordinate columns plus a CRS), GeoPackage, GeoJSON and Shapefile
(read with pyogrio), in any CRS. Whatever the file calls its columns, the result
has the columns

=========  ===========================================================
sample_id  str, unique (the ``id`` column, else the 1-based row number)
region     str (the ``region`` column, else ``"all"``)
value      float, the concentration in mg/kg, finite and >= 0
ph         float, NaN when there is no pH column
paddy      bool, False when there is no paddy column
orchard    bool, False when there is no orchard column
row        int, 1-based data row in the source file (for messages)
geometry   points in the samples' own CRS
=========  ===========================================================

and ``attrs`` ``{"source": path, "columns": {standard: source column}}``. Every
problem a user must fix is an :class:`~soilsource.errors.InputError` that names
the file, the column and the rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import geopandas as gpd
import numpy as np
import pandas as pd
from pyproj import CRS, Transformer

from soilsource.config import DEFAULT_REGION, SamplesConfig, is_csv
from soilsource.errors import InputError, format_rows

STANDARD_COLUMNS = ("sample_id", "region", "value", "ph", "paddy", "orchard", "row", "geometry")
_TRUE = {"1", "true", "t", "yes", "y", "1.0"}
_FALSE = {"0", "false", "f", "no", "n", "0.0"}


def read_samples(spec: SamplesConfig) -> gpd.GeoDataFrame:
    """Read and check the samples described by the ``samples`` configuration section.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "s.csv"
    >>> _ = path.write_text("x,y,cd\\n5.0,52.0,0.4\\n5.1,52.1,0.1\\n")
    >>> samples = read_samples(SamplesConfig(path=path, value="cd", crs="EPSG:4326"))
    >>> samples[["sample_id", "region", "value"]].to_dict("list")
    {'sample_id': ['1', '2'], 'region': ['all', 'all'], 'value': [0.4, 0.1]}
    """
    path = Path(spec.path)
    frame = _read_table(spec)
    if isinstance(frame, gpd.GeoDataFrame):
        points = _vector_points(frame, spec)
    else:
        points = _csv_points(frame, spec)
    table = _standard_columns(frame, spec)
    samples = gpd.GeoDataFrame(table, geometry=points, crs=points.crs)
    samples.attrs["source"] = str(path)
    samples.attrs["columns"] = _column_map(spec)
    return samples[list(STANDARD_COLUMNS)]


def _read_table(spec: SamplesConfig) -> pd.DataFrame:
    path = Path(spec.path)
    if not path.exists():
        raise InputError(path, "", "file not found (key 'samples.path')")
    if not path.is_file():
        raise InputError(path, "", "not a file (key 'samples.path')")
    if path.stat().st_size == 0:
        raise InputError(path, "", "no samples (the file is empty)")
    try:
        if is_csv(path):
            sep = "\t" if path.suffix.lower() == ".tsv" else None
            frame = pd.read_csv(path, sep=sep, engine="python", skipinitialspace=True)
        else:
            frame = gpd.read_file(path, layer=spec.layer, engine="pyogrio")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(path, "", f"cannot read as a table: {_first_line(exc)}") from None
    except Exception as exc:  # pyogrio/GDAL: DataSourceError, DataLayerError, ...
        raise InputError(path, "", f"cannot read: {_first_line(exc)}") from None
    if len(frame) == 0:
        raise InputError(path, "", "no samples (the file has no rows)")
    frame.columns = [str(c).strip() for c in frame.columns]
    wanted = {"value": spec.value, "region": spec.region, "id": spec.id, "ph": spec.ph}
    wanted |= {"paddy": spec.paddy, "orchard": spec.orchard}
    if is_csv(path):
        wanted |= {"x": spec.x, "y": spec.y}
    for key, column in wanted.items():
        if column is not None and column not in frame.columns:
            shown = ", ".join(c for c in frame.columns if c != "geometry")
            raise InputError(
                path, f"column '{column}'", f"not found (key 'samples.{key}'; columns: {shown})"
            )
    return frame


def _csv_points(frame: pd.DataFrame, spec: SamplesConfig) -> gpd.GeoSeries:
    path = Path(spec.path)
    if spec.crs is None:
        raise InputError(path, "key 'samples.crs'", "CSV coordinates need a CRS, e.g. EPSG:4326")
    crs = CRS.from_user_input(spec.crs)
    x = _numbers(frame, spec.x, path, what="coordinate")
    y = _numbers(frame, spec.y, path, what="coordinate")
    _check_coordinates(x, y, crs, path, f"columns '{spec.x}', '{spec.y}'")
    return gpd.GeoSeries(gpd.points_from_xy(x, y), crs=crs, index=frame.index)


def _vector_points(frame: gpd.GeoDataFrame, spec: SamplesConfig) -> gpd.GeoSeries:
    path = Path(spec.path)
    geometry = frame.geometry
    crs = geometry.crs
    if crs is None:
        if spec.crs is None:
            raise InputError(path, "", "has no CRS; give it with key 'samples.crs'")
        crs = CRS.from_user_input(spec.crs)
        geometry = geometry.set_crs(crs)
    empty = geometry.isna() | geometry.is_empty
    if empty.any():
        rows = (np.flatnonzero(empty.to_numpy()) + 1).tolist()
        raise InputError(path, "geometry", f"{format_rows(rows)}: no geometry")
    kinds = geometry.geom_type.to_numpy()
    multi = kinds == "MultiPoint"
    if multi.any():  # a one-point MultiPoint is a point; more is ambiguous
        counts = geometry[multi].count_geometries().to_numpy()
        if (counts > 1).any():
            rows = (np.flatnonzero(multi)[counts > 1] + 1).tolist()
            raise InputError(path, "geometry", f"{format_rows(rows)}: MultiPoint with >1 point")
        geometry = geometry.copy()
        geometry[multi] = geometry[multi].get_geometry(0)
        kinds = geometry.geom_type.to_numpy()
    bad = kinds != "Point"
    if bad.any():
        rows = (np.flatnonzero(bad) + 1).tolist()
        raise InputError(path, "geometry", f"{format_rows(rows)}: {kinds[bad][0]}, expected points")
    x, y = geometry.x.to_numpy(), geometry.y.to_numpy()
    _check_coordinates(x, y, CRS.from_user_input(crs), path, "geometry")
    return gpd.GeoSeries(geometry.to_numpy(), crs=crs, index=frame.index)


def _check_coordinates(x: np.ndarray, y: np.ndarray, crs: CRS, path: Path, where: str) -> None:
    """NaN, infinite or impossible coordinates (outside the CRS's valid range) are errors."""
    missing = ~(np.isfinite(x) & np.isfinite(y))
    if missing.any():
        rows = (np.flatnonzero(missing) + 1).tolist()
        raise InputError(path, where, f"{format_rows(rows)}: missing or non-finite coordinates")
    if crs.is_geographic:
        lon, lat = x, y
    else:
        to_geo = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
        with np.errstate(all="ignore"):
            lon, lat = to_geo.transform(x, y, errcheck=False)
    impossible = ~(np.isfinite(lon) & np.isfinite(lat))
    impossible |= (np.abs(lat) > 90) | (np.abs(lon) > 360)
    if crs.is_geographic:
        impossible |= np.abs(lon) > 180
    if impossible.any():
        rows = (np.flatnonzero(impossible) + 1).tolist()
        i = int(np.flatnonzero(impossible)[0])
        raise InputError(
            path,
            where,
            f"{format_rows(rows)}: impossible coordinates for {crs.name} "
            f"(e.g. {x[i]:g}, {y[i]:g}); wrong CRS or x/y swapped?",
        )


def _standard_columns(frame: pd.DataFrame, spec: SamplesConfig) -> pd.DataFrame:
    path = Path(spec.path)
    n = len(frame)
    value = _numbers(frame, cast(str, spec.value), path, what="concentration")  # one metal
    negative = np.flatnonzero(value < 0)
    if negative.size:
        raise InputError(
            path, f"column '{spec.value}'", f"{format_rows((negative + 1).tolist())}: negative"
        )
    table = pd.DataFrame(index=frame.index)
    table["sample_id"] = _sample_ids(frame, spec, path)
    table["region"] = _regions(frame, spec, path)
    table["value"] = value
    table["ph"] = _ph(frame, spec.ph, path) if spec.ph else np.full(n, np.nan)
    table["paddy"] = _flags(frame, spec.paddy, path) if spec.paddy else np.zeros(n, bool)
    table["orchard"] = _flags(frame, spec.orchard, path) if spec.orchard else np.zeros(n, bool)
    table["row"] = np.arange(1, n + 1)
    return table


def _numbers(frame: pd.DataFrame, column: str, path: Path, what: str) -> np.ndarray:
    """A numeric column; missing and non-numeric cells are errors naming the rows."""
    raw = frame[column]
    numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    blank = raw.isna().to_numpy() | raw.astype(str).str.strip().eq("").to_numpy()
    not_number = np.isnan(numbers) & ~blank
    if not_number.any():
        rows = (np.flatnonzero(not_number) + 1).tolist()
        example = raw.iloc[int(np.flatnonzero(not_number)[0])]
        raise InputError(
            path, f"column '{column}'", f"{format_rows(rows)}: not a number (e.g. {example!r})"
        )
    if blank.any():
        rows = (np.flatnonzero(blank) + 1).tolist()
        raise InputError(path, f"column '{column}'", f"{format_rows(rows)}: missing {what}")
    infinite = ~np.isfinite(numbers)
    if infinite.any():
        rows = (np.flatnonzero(infinite) + 1).tolist()
        raise InputError(path, f"column '{column}'", f"{format_rows(rows)}: not finite")
    return numbers


def _sample_ids(frame: pd.DataFrame, spec: SamplesConfig, path: Path) -> np.ndarray:
    if spec.id is None:
        return np.array([str(i) for i in range(1, len(frame) + 1)], dtype=object)
    ids = frame[spec.id]
    missing = ids.isna().to_numpy()
    if missing.any():
        rows = (np.flatnonzero(missing) + 1).tolist()
        raise InputError(path, f"column '{spec.id}'", f"{format_rows(rows)}: missing sample id")
    text = ids.map(_id_text).to_numpy(dtype=object)
    duplicated = pd.Series(text).duplicated(keep=False).to_numpy()
    if duplicated.any():
        first = text[duplicated][0]
        rows = (np.flatnonzero(text == first) + 1).tolist()
        n_dup = len(set(text[duplicated]))
        more = f" ({n_dup} duplicated ids in all)" if n_dup > 1 else ""
        raise InputError(
            path,
            f"column '{spec.id}'",
            f"duplicate sample id {first!r} in {format_rows(rows)}{more}",
        )
    return text


def _id_text(value: object) -> str:
    """'7' for 7 and 7.0 (pandas reads integer ids with gaps as floats)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _regions(frame: pd.DataFrame, spec: SamplesConfig, path: Path) -> np.ndarray:
    if spec.region is None:
        return np.full(len(frame), DEFAULT_REGION, dtype=object)
    regions = frame[spec.region]
    text = regions.map(_id_text).to_numpy(dtype=object)
    missing = regions.isna().to_numpy() | (text == "")
    if missing.any():
        rows = (np.flatnonzero(missing) + 1).tolist()
        raise InputError(path, f"column '{spec.region}'", f"{format_rows(rows)}: missing region")
    bad = np.array(["/" in t or "\\" in t for t in text])  # regions name files ({region})
    if bad.any():
        rows = (np.flatnonzero(bad) + 1).tolist()
        raise InputError(
            path, f"column '{spec.region}'", f"{format_rows(rows)}: '/' in a region name"
        )
    return text


def _ph(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """pH may be missing in some rows (rules that need it say so); it must be 0-14."""
    raw = frame[column]
    ph = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    not_number = np.isnan(ph) & raw.notna().to_numpy() & raw.astype(str).str.strip().ne("")
    if not_number.any():
        rows = (np.flatnonzero(not_number) + 1).tolist()
        raise InputError(path, f"column '{column}'", f"{format_rows(rows)}: pH is not a number")
    with np.errstate(invalid="ignore"):
        outside = (ph < 0) | (ph > 14)
    if outside.any():
        rows = (np.flatnonzero(outside) + 1).tolist()
        raise InputError(path, f"column '{column}'", f"{format_rows(rows)}: pH outside 0-14")
    return ph


def _flags(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """Booleans from 1/0, true/false, yes/no, t/f, y/n (any case); anything else is an error."""
    raw = frame[column]
    text = raw.map(lambda v: "" if pd.isna(v) else str(v).strip().lower()).to_numpy(dtype=object)
    true = np.isin(text, list(_TRUE))
    bad = ~(true | np.isin(text, list(_FALSE)))
    if bad.any():
        rows = (np.flatnonzero(bad) + 1).tolist()
        raise InputError(
            path,
            f"column '{column}'",
            f"{format_rows(rows)}: not a yes/no value (use true/false or 1/0)",
        )
    return true


def _column_map(spec: SamplesConfig) -> dict[str, str]:
    names: dict[str, Any] = {
        "sample_id": spec.id,
        "region": spec.region,
        "value": spec.value,
        "ph": spec.ph,
    }
    names |= {"paddy": spec.paddy, "orchard": spec.orchard}
    if is_csv(spec.path):
        names |= {"x": spec.x, "y": spec.y}
    return {k: v for k, v in names.items() if v is not None}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
