"""The user's input files, read and checked: samples, imagery, land use.

Each module turns files into plain Python/numpy objects and raises
:class:`~soilsource.errors.InputError` (file, where, what) for anything the user
must fix; nothing here trains, explains or writes.
"""

from soilsource.inputs.imagery import (
    RasterInfo,
    assign_rasters,
    describe_crs,
    describe_raster,
    open_raster,
    region_path,
    reproject_points,
    resolve_imagery,
)
from soilsource.inputs.landuse import Landuse, iter_windows, open_landuse, read_classes
from soilsource.inputs.samples import STANDARD_COLUMNS, read_samples

__all__ = [
    "STANDARD_COLUMNS",
    "Landuse",
    "RasterInfo",
    "assign_rasters",
    "describe_crs",
    "describe_raster",
    "iter_windows",
    "open_landuse",
    "open_raster",
    "read_classes",
    "read_samples",
    "region_path",
    "reproject_points",
    "resolve_imagery",
]
