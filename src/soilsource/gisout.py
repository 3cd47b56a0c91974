"""GIS-ready outputs: Cloud-Optimised GeoTIFFs with a QGIS style beside them, styled GeoPackages.

Every raster a run writes goes through :func:`cog_path`: the writer fills a plain GeoTIFF
(block by block, as it computes), and on success GDAL's ``COG`` driver copies it into a
Cloud-Optimised GeoTIFF (internal 256 px tiles, overviews down to about 128 px, DEFLATE
with the floating-point predictor, band statistics), which is moved into place
atomically (:mod:`soilsource.atomic`). Its QGIS style (``NAME.qml``, the same colours as
the report) is written first, so a raster under its final name always has its style.
What the values are goes into the metadata (``QUANTITY``, ``UNITS``, ``RULE``, ``MODEL``
tags and the band's unit), readable with ``gdalinfo`` or ``rasterio``.

Styles (:class:`RasterStyle`):

- ``probability``: a fixed 0-1 ramp (:data:`PROBABILITY_CMAP`), the same in every file;
- ``signed`` (sensitivity): a diverging ramp centred on 0 (:data:`SIGNED_CMAP`), from
  ``-m`` to ``+m`` with ``m`` the 99th percentile of ``|value|``;
- ``concentration`` (mg/kg): :data:`CONCENTRATION_CMAP` with stops evenly spaced on a
  log scale between the 2nd and 98th percentiles (the report colours the measured
  samples the same way).

GeoPackage layers get their style in the ``layer_styles`` table, with QGIS's own columns,
so QGIS draws them styled when the layer is opened (:func:`write_layer_style`).
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
import rasterio.shutil
from matplotlib import colormaps
from matplotlib.colors import to_hex

from soilsource.atomic import atomic_path, scratch_path, write_text_atomic

__all__ = [
    "CONCENTRATION_CMAP",
    "PROBABILITY_CMAP",
    "SIGNED_CMAP",
    "RasterStyle",
    "cog_path",
    "layer_style_qml",
    "raster_style_qml",
    "style_path",
    "write_layer_style",
]

PROBABILITY_CMAP = "YlOrRd"
"""Probabilities: light yellow (unlikely) to dark red (likely); no grey, so it stands out
from imagery shown in grey beneath it."""
SIGNED_CMAP = "RdBu_r"
"""Signed quantities (sensitivity): blue below 0, white at 0, red above."""
CONCENTRATION_CMAP = "viridis"
"""Concentrations, mg/kg: the colours of the measured samples in the report."""

BLOCK_PX = 256
"""Internal tile side of every GeoTIFF."""
SMALLEST_OVERVIEW_PX = 128
"""Overviews halve the raster until its longer side is at most this (at least one level)."""
N_STOPS = 11
"""Colour stops of a ramp in a style."""

Kind = Literal["probability", "signed", "concentration"]


@dataclass(frozen=True)
class RasterStyle:
    """How a single-band raster is drawn (in QGIS and in the report) and what it holds.

    ``quantity`` is a few words (``"probability of exceeding the rule"``), ``units`` the
    unit of the values (``"mg/kg"``, ``"1"`` for a probability), ``rule`` the rule the
    values refer to, ``model`` the model that made them.
    """

    kind: Kind
    quantity: str
    units: str
    rule: str = ""
    model: str = ""

    @property
    def cmap(self) -> str:
        return {
            "probability": PROBABILITY_CMAP,
            "signed": SIGNED_CMAP,
            "concentration": CONCENTRATION_CMAP,
        }[self.kind]

    def tags(self) -> dict[str, str]:
        """The dataset tags that say what the values are."""
        tags = {"QUANTITY": self.quantity, "UNITS": self.units}
        if self.rule:
            tags["RULE"] = self.rule
        if self.model:
            tags["MODEL"] = self.model
        return tags

    def stops(self, values: np.ndarray) -> list[float]:
        """Values of the colour stops for a raster holding ``values`` (NaN ignored)."""
        finite = values[np.isfinite(values)]
        if self.kind == "probability":
            return np.linspace(0.0, 1.0, N_STOPS).tolist()
        if self.kind == "signed":
            m = float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0
            m = m if m > 0 else 1.0
            return np.linspace(-m, m, N_STOPS).tolist()
        positive = finite[finite > 0]
        if positive.size == 0:
            return np.linspace(0.0, 1.0, N_STOPS).tolist()
        lo, hi = np.percentile(positive, [2, 98])
        if not hi > lo:
            lo, hi = lo / 2, lo * 2
        return np.geomspace(lo, hi, N_STOPS).tolist()


def style_path(path: str | os.PathLike[str]) -> Path:
    """Where the QGIS style of a raster goes: beside it, ``NAME.qml``."""
    return Path(path).with_suffix(".qml")


def overview_count(width: int, height: int) -> int:
    """Overview levels (each half the previous) until the longer side is at most 128 px.

    At least one, so that even a small raster has an overview (QGIS and GDAL read it
    when zoomed out).

    >>> overview_count(78, 104), overview_count(512, 512), overview_count(20000, 20000)
    (1, 2, 8)
    """
    longest = max(width, height)
    return max(1, math.ceil(math.log2(max(longest, 1) / SMALLEST_OVERVIEW_PX)))


@contextmanager
def cog_path(
    path: str | os.PathLike[str],
    style: RasterStyle,
    tags: Mapping[str, str] | None = None,
) -> Iterator[Path]:
    """Yield a scratch GeoTIFF path to write; on success ``path`` becomes its COG, styled.

    Write anything rasterio can write to the yielded path (tiled or not). When the block
    ends without an exception: the dataset tags of ``style`` and ``tags`` and the band's
    unit are set, ``NAME.qml`` is written beside ``path``, and the COG copy is moved to
    ``path``. On an exception nothing appears under ``path`` and the scratch file is gone.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with scratch_path(final) as scratch:
        yield scratch
        with rasterio.open(scratch, "r+") as dst:
            dst.update_tags(**style.tags(), **dict(tags or {}))
            dst.units = (style.units,) * dst.count
            values = _sample_values(dst)
            width, height = dst.width, dst.height
        write_text_atomic(style_path(final), raster_style_qml(style, style.stops(values)))
        with atomic_path(final) as tmp:
            rasterio.shutil.copy(
                scratch,
                tmp,
                driver="COG",
                BLOCKSIZE=BLOCK_PX,
                COMPRESS="DEFLATE",
                PREDICTOR="YES",
                OVERVIEW_COUNT=overview_count(width, height),
                RESAMPLING="AVERAGE",
                STATISTICS="YES",
                BIGTIFF="IF_SAFER",
            )


def _sample_values(dst: rasterio.io.DatasetWriter, max_px: int = 1024) -> np.ndarray:
    """Band 1 read decimated (at most ``max_px`` on the long side), NaN where no data."""
    scale = min(1.0, max_px / max(dst.width, dst.height))
    shape = (max(1, round(dst.height * scale)), max(1, round(dst.width * scale)))
    data = dst.read(1, out_shape=shape, masked=True).astype(np.float64)
    return data.filled(np.nan)


# --- QGIS styles ------------------------------------------------------------------------------

QGIS_VERSION = "3.28.0-Firenze"
"""The QGIS version the styles name (any QGIS 3 reads them)."""


def _qgis_root(categories: str) -> ET.Element:
    return ET.Element("qgis", version=QGIS_VERSION, styleCategories=categories)


def _document(root: ET.Element) -> str:
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(
        root, encoding="unicode"
    )


def _label(value: float) -> str:
    return f"{value:.3g}"


def raster_style_qml(style: RasterStyle, stops: list[float]) -> str:
    """A QGIS single-band pseudocolour style: ``style.cmap`` interpolated over ``stops``.

    Nodata is transparent; values beyond the first and last stop take the end colours.
    """
    colours = colormaps[style.cmap](np.linspace(0, 1, len(stops)))
    lo, hi = stops[0], stops[-1]
    root = _qgis_root("AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(
        pipe,
        "rasterrenderer",
        type="singlebandpseudocolor",
        band="1",
        opacity="1",
        alphaBand="-1",
        classificationMin=repr(lo),
        classificationMax=repr(hi),
        nodataColor="",
    )
    ET.SubElement(renderer, "rasterTransparency")
    limits = ET.SubElement(renderer, "minMaxOrigin")
    for key, text in (("limits", "None"), ("extent", "WholeRaster"), ("statAccuracy", "Exact")):
        ET.SubElement(limits, key).text = text
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader")
    shader.attrib.update(
        colorRampType="INTERPOLATED",
        classificationMode="2",  # equal interval over the given stops
        clip="0",
        minimumValue=repr(lo),
        maximumValue=repr(hi),
        labelPrecision="3",
    )
    for value, colour in zip(stops, colours, strict=True):
        ET.SubElement(
            shader,
            "item",
            value=repr(round(float(value), 12)),
            color=to_hex(colour),
            alpha="255",
            label=_label(value) + (f" {style.units}" if style.units not in ("", "1") else ""),
        )
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "customproperties")
    meta = ET.SubElement(root, "layerMetadata")
    ET.SubElement(meta, "abstract").text = "; ".join(f"{k}: {v}" for k, v in style.tags().items())
    return _document(root)


def _option(parent: ET.Element, name: str, value: str) -> None:
    ET.SubElement(parent, "Option", name=name, type="QString", value=value)


def layer_style_qml(
    outline: str = "#ffe14d", label_field: str | None = None, width_mm: float = 0.6
) -> str:
    """A QGIS style for polygons: outline only (``outline``), labelled by ``label_field``."""
    from matplotlib.colors import to_rgba

    r, g, b, _ = (round(c * 255) for c in to_rgba(outline))
    root = _qgis_root("Symbology|Labeling")
    renderer = ET.SubElement(
        root, "renderer-v2", type="singleSymbol", symbollevels="0", enableorderby="0"
    )
    symbols = ET.SubElement(renderer, "symbols")
    symbol = ET.SubElement(
        symbols, "symbol", type="fill", name="0", alpha="1", clip_to_extent="1", force_rhr="0"
    )
    layer = ET.SubElement(
        symbol, "layer", attrib={"class": "SimpleFill", "pass": "0"}, enabled="1", locked="0"
    )
    options = ET.SubElement(layer, "Option", type="Map")
    for name, value in (
        ("color", "0,0,0,0"),
        ("style", "no"),
        ("outline_color", f"{r},{g},{b},255"),
        ("outline_style", "solid"),
        ("outline_width", f"{width_mm:g}"),
        ("outline_width_unit", "MM"),
        ("joinstyle", "miter"),
    ):
        _option(options, name, value)
    if label_field:
        labeling = ET.SubElement(root, "labeling", type="simple")
        settings = ET.SubElement(labeling, "settings", calloutType="simple")
        ET.SubElement(
            settings,
            "text-style",
            fieldName=label_field,
            isExpression="0",
            fontSize="9",
            textColor="0,0,0,255",
        )
        buffer = ET.SubElement(settings, "text-buffer")
        buffer.attrib.update(bufferDraw="1", bufferSize="1", bufferColor="255,255,255,255")
        ET.SubElement(settings, "placement", placement="1")
    ET.SubElement(root, "layerGeometryType").text = "2"
    return _document(root)


def write_layer_style(
    gpkg: str | os.PathLike[str],
    layer: str,
    qml: str,
    *,
    name: str = "soilsource",
    description: str = "",
) -> None:
    """Add ``qml`` as the default style of ``layer`` to the GeoPackage's ``layer_styles``.

    The table has the columns QGIS creates when it saves a style into a GeoPackage, so
    QGIS applies the style as soon as the layer is opened. Call it on the GeoPackage
    before it is moved into place (it appends to ``layer_styles``).
    """
    import pandas as pd
    import pyogrio

    gpkg = Path(gpkg)
    geometry = pyogrio.read_info(gpkg, layer=layer).get("geometry_name") or "geom"
    row = pd.DataFrame(
        {
            "f_table_catalog": [""],
            "f_table_schema": [""],
            "f_table_name": [layer],
            "f_geometry_column": [geometry],
            "styleName": [name],
            "styleQML": [qml],
            "styleSLD": [""],
            "useAsDefault": [True],
            "description": [description],
            "owner": [""],
            "ui": [""],
            "update_time": [pd.Timestamp.now(tz="UTC").tz_localize(None)],
        }
    )
    exists = "layer_styles" in {n for n, _ in pyogrio.list_layers(gpkg)}
    pyogrio.write_dataframe(row, gpkg, layer="layer_styles", driver="GPKG", append=exists)


def write_features(
    path: str | os.PathLike[str],
    frames: Iterable,
    *,
    layer: str,
    columns: list[str],
    geometry_type: str,
    crs=None,
    style: str | None = None,
    description: str = "",
) -> Path:
    """Write every region's features into one GeoPackage layer, atomically, with its style.

    ``frames``: GeoDataFrames (None or empty ones are skipped); all must share one CRS
    (the imagery's). ``crs`` locates the layer when no region has a feature, so that even
    an empty layer (with ``columns``) is located. ``style``: a QGIS style
    (:func:`layer_style_qml`) stored in the GeoPackage's ``layer_styles``.
    """
    import geopandas as gpd
    import pandas as pd

    frames = [f for f in frames if f is not None]
    crs_set = {str(f.crs) for f in frames if f.crs is not None}
    if len(crs_set) > 1:
        raise ValueError(f"{layer} of several CRS cannot share one layer: {sorted(crs_set)}")
    full = [f for f in frames if len(f)]
    if full:
        combined = gpd.GeoDataFrame(pd.concat(full, ignore_index=True), crs=full[0].crs)
    else:
        combined = gpd.GeoDataFrame(
            {c: pd.Series(dtype=object) for c in columns},
            geometry=[],
            crs=frames[0].crs if frames and frames[0].crs is not None else crs,
        )
    with atomic_path(path) as tmp:
        combined.to_file(tmp, layer=layer, driver="GPKG", geometry_type=geometry_type)
        if style is not None:
            write_layer_style(tmp, layer, style, description=description)
    return Path(path)
