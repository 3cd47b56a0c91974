"""Reference layers (``report.reference``): vector files drawn as outlines on every map."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import geopandas as gpd
from pyogrio.errors import DataLayerError, DataSourceError

from soilsource.errors import InputError

KEY = "report.reference"


def read_reference(path: str | PathLike[str], key: str = KEY) -> gpd.GeoDataFrame:
    """A reference layer (any vector format GDAL reads), or one line naming the file.

    Raises
    ------
    InputError
        The file is missing, not a readable vector file, or has no CRS.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "", f"file not found (key '{key}')")
    try:
        frame = gpd.read_file(path)
    except (DataSourceError, DataLayerError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, "", f"not a readable vector file ({first}; key '{key}')") from None
    if frame.crs is None:
        raise InputError(path, "", f"has no CRS; give the file one (key '{key}')")
    return frame[frame.geometry.notna() & ~frame.geometry.is_empty]
