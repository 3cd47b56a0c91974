"""Figures of a run (PNG, matplotlib without a display): ROC curves per region, and the
map layers of the HTML report (imagery, sensitivity and probability overlays, colour bars).

ROC figures are written atomically so that an interrupted run leaves no half image. Map
layers are PNG bytes for the report: rasters are read decimated (rasterio ``out_shape``),
never whole at full resolution, so a large region costs one small read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import io
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import rasterio
from affine import Affine
from matplotlib.colors import Colormap, Normalize, TwoSlopeNorm
from rasterio.enums import Resampling
from rasterio.windows import from_bounds
from sklearn.metrics import roc_curve

from soilsource.atomic import atomic_path
from soilsource.models.registry import COLOURS, LABELS, METHOD


def roc_figure(
    path: str | PathLike[str],
    region: str,
    labels: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    aucs: Mapping[str, float | None],
    *,
    note: str = "",
) -> Path:
    """ROC curves of several models for one region's out-of-fold predictions.

    Models whose AUC is None (one class, too few positives) are listed without a curve.
    """
    labels = np.asarray(labels).astype(int)
    fig, ax = plt.subplots(figsize=(4.8, 4.6), dpi=120)
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="chance")
    for name, proba in probabilities.items():
        auc = aucs.get(name)
        label = LABELS.get(name, name)
        finite = np.isfinite(proba)
        if auc is None or len(np.unique(labels[finite])) < 2:
            ax.plot([], [], color=COLOURS.get(name, "0.3"), label=f"{label}: AUC n/a")
            continue
        fpr, tpr, _ = roc_curve(labels[finite], proba[finite])
        ax.plot(
            fpr,
            tpr,
            color=COLOURS.get(name),
            lw=2 if name == METHOD else 1.3,
            label=f"{label}: AUC {auc:.3f}",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    n, n_pos = len(labels), int(labels.sum())
    ax.set_title(f"{region}  (n = {n}, positive = {n_pos})", fontsize=10)
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    if note:
        fig.text(0.01, 0.01, note, fontsize=6, color="0.4")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def reliability_png(groups: Mapping[str, tuple[np.ndarray, np.ndarray]], bins: int = 5) -> bytes:
    """Reliability diagram (PNG): observed share of positives against the mean predicted
    probability, in ``bins`` equal-count bins of each group's probabilities.

    ``groups`` maps a name (a region) to its 0/1 labels and probabilities; NaN
    probabilities are left out. A calibrated model lies on the diagonal.
    """
    fig, ax = plt.subplots(figsize=(4.8, 4.6), dpi=110)
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="calibrated")
    for name, (labels, proba) in groups.items():
        labels, proba = np.asarray(labels, float), np.asarray(proba, float)
        ok = np.isfinite(proba)
        if ok.sum() < bins:
            continue
        order = np.argsort(proba[ok], kind="stable")
        parts = np.array_split(order, bins)
        mean_p = [proba[ok][part].mean() for part in parts]
        observed = [labels[ok][part].mean() for part in parts]
        ax.plot(mean_p, observed, marker="o", ms=3, lw=1.2, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability (out of fold)")
    ax.set_ylabel("observed share contaminated")
    ax.set_title(f"Reliability ({bins} equal-count bins per region)", fontsize=10)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def profile_bars_png(shares: Mapping[str, Mapping[str, float]]) -> bytes:
    """Source profiles as stacked bars (PNG): per metal, each factor's share of its total.

    ``shares`` maps a factor's label (``factor 1 (Cd-Zn)``) to its share of each metal
    (0-1; the shares of a metal over all factors sum to 1, as in ``sources/profiles.csv``).
    """
    factors = list(shares)
    metals = list(dict.fromkeys(m for f in factors for m in shares[f]))
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(metals), 3.4), dpi=110)
    bottom = np.zeros(len(metals))
    colours = plt.get_cmap("tab10")
    for k, factor in enumerate(factors):
        share = np.array([shares[factor].get(m, 0.0) for m in metals]) * 100
        ax.bar(metals, share, bottom=bottom, color=colours(k % 10), label=factor, width=0.7)
        bottom += share
    ax.set_ylim(0, 100)
    ax.set_ylabel("share of the metal's modelled total, %")
    ax.set_title("Source profiles", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


# --- map layers of the report ------------------------------------------------------------------

MAP_MAX_PX = 900
"""Longest side of a map layer in the report: sharp on a laptop screen, small in the file."""

READ_CACHE_MB = 128
"""GDAL block cache (MB) while reading map layers."""

TRUE_COLOUR = ("red", "green", "blue")
"""Band descriptions of a true-colour composite (case-insensitive)."""


@dataclass(frozen=True)
class MapGrid:
    """The display grid of one map: its size in pixels and where it lies in the raster's CRS.

    Every layer of a map (imagery, overlays, samples, hotspots) is drawn on this grid,
    so in the browser they line up by stacking images of the same size.
    """

    width: int
    height: int
    bounds: tuple[float, float, float, float]  # left, bottom, right, top

    @property
    def transform(self) -> Affine:
        """Map coordinates -> display pixel: ``~grid.transform * (x, y)`` gives (col, row)."""
        left, bottom, right, top = self.bounds
        return Affine((right - left) / self.width, 0, left, 0, -(top - bottom) / self.height, top)

    def pixel_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (col, row) of points given in the raster's CRS."""
        left, bottom, right, top = self.bounds
        col = (np.asarray(x, float) - left) / (right - left) * self.width
        row = (top - np.asarray(y, float)) / (top - bottom) * self.height
        return col, row


def map_grid(path: str | PathLike[str], max_px: int = MAP_MAX_PX) -> MapGrid:
    """The display grid of a raster: its extent at most ``max_px`` pixels on the long side.

    Never larger than the raster itself (a small region is not upsampled).
    """
    with rasterio.open(path) as src:
        scale = min(1.0, max_px / max(src.width, src.height))
        width = max(1, round(src.width * scale))
        height = max(1, round(src.height * scale))
        return MapGrid(width, height, tuple(src.bounds))


def true_colour_bands(descriptions: tuple[str | None, ...]) -> list[int]:
    """1-based bands for red, green, blue: by description, else 3-2-1, else the first band grey.

    >>> true_colour_bands(("blue", "green", "red", "nir"))
    [3, 2, 1]
    >>> true_colour_bands((None, None, None, None))
    [3, 2, 1]
    >>> true_colour_bands(("elevation",))
    [1, 1, 1]
    """
    names = [(d or "").strip().lower() for d in descriptions]
    if all(c in names for c in TRUE_COLOUR):
        return [names.index(c) + 1 for c in TRUE_COLOUR]
    if len(names) >= 3:
        return [3, 2, 1]
    return [1, 1, 1]


def read_on_grid(
    path: str | PathLike[str],
    grid: MapGrid,
    bands: list[int] | None = None,
    resampling: Resampling = Resampling.average,
) -> np.ma.MaskedArray:
    """Bands of a raster on ``grid`` (bands, height, width), masked where there is no data.

    One decimated read (``out_shape``) of the window that covers the grid's extent:
    GDAL uses overviews where the file has them and never materialises the full
    resolution. Parts of the grid outside the raster are masked; only then is the read
    boundless, since rasterio's boundless read goes through a warped VRT that held about
    250 MiB more for a 6000 px image (``python benchmarks/bench_report.py``: peak 441
    -> 251 MiB, 193 of them imports). GDAL's block cache is capped at
    :data:`READ_CACHE_MB` (by default it may take 5 % of RAM).
    """
    with rasterio.Env(GDAL_CACHEMAX=READ_CACHE_MB), rasterio.open(path) as src:
        bands = bands or [1]
        window = from_bounds(*grid.bounds, transform=src.transform)
        inside = (
            window.col_off >= -0.5
            and window.row_off >= -0.5
            and window.col_off + window.width <= src.width + 0.5
            and window.row_off + window.height <= src.height + 0.5
        )
        data = src.read(
            bands,
            window=window,
            out_shape=(len(bands), grid.height, grid.width),
            resampling=resampling,
            masked=True,
            boundless=not inside,  # a boundless read goes through a warped VRT: slower
        )
    data = np.ma.masked_invalid(data.astype("float32"))
    return data


def stretch(data: np.ma.MaskedArray, percentiles: tuple[float, float] = (2, 98)) -> np.ndarray:
    """Each band scaled to 0-1 between its percentiles of valid pixels (clipped).

    The usual display stretch of remote-sensing imagery: a few bright roofs or dark
    water pixels do not wash the picture out.

    >>> a = np.ma.masked_invalid(np.array([[[0.0, 50.0, 100.0, np.nan]]]))
    >>> stretch(a, (0, 100)).round(2).tolist()
    [[[0.0, 0.5, 1.0, 0.0]]]
    """
    out = np.zeros(data.shape, dtype="float32")
    for b in range(data.shape[0]):
        valid = data[b].compressed()
        if valid.size == 0:
            continue
        lo, hi = np.percentile(valid, percentiles)
        span = hi - lo if hi > lo else 1.0
        out[b] = np.clip((data[b].filled(lo) - lo) / span, 0, 1)
    return out


NODATA_GREY = (0.914, 0.925, 0.937)
"""Colour of imagery nodata in the report (the page's map background, #e9ecef)."""


def true_colour_jpeg(path: str | PathLike[str], grid: MapGrid, quality: int = 85) -> bytes:
    """The imagery as a percentile-stretched true-colour JPEG on ``grid``, nodata grey.

    JPEG, not PNG: imagery is photographic, and at quality 85 it is about six times
    smaller than a PNG with no visible difference at report size (a 512 px region:
    110 kB instead of 710 kB). The overlays, which need exact colours and
    transparency, stay PNG.
    """
    with rasterio.open(path) as src:
        bands = true_colour_bands(src.descriptions)
    data = read_on_grid(path, grid, bands)
    rgb = np.moveaxis(stretch(data), 0, -1)
    rgb[np.ma.getmaskarray(data).all(axis=0)] = NODATA_GREY
    return image_bytes(rgb, "jpeg", quality=quality)


def overlay_png(
    values: np.ma.MaskedArray,
    cmap: str | Colormap,
    norm: Normalize,
    *,
    fade_centre: bool = False,
) -> bytes:
    """A single-band layer coloured by ``cmap``/``norm`` as RGBA PNG, nodata transparent.

    With ``fade_centre`` (signed quantities on a diverging scale) a pixel's opacity
    grows with its distance from the centre of the scale, so places without effect
    let the imagery show through instead of veiling it in white.
    """
    scaled = np.ma.filled(norm(values.filled(np.nan)), np.nan)
    rgba = plt.get_cmap(cmap)(scaled)
    alpha = np.clip(np.abs(scaled - 0.5) * 2, 0, 1) ** 0.6 if fade_centre else 1.0
    rgba[..., 3] = np.where(np.ma.getmaskarray(values) | ~np.isfinite(scaled), 0.0, alpha)
    return png_bytes(rgba)


def symmetric_norm(values: np.ma.MaskedArray, percentile: float = 99.0) -> Normalize:
    """A colour scale centred on zero, each side up to the ``percentile`` of its own values.

    Signed quantities (sensitivity) read at a glance: white is no effect, red the
    positive side, blue the negative, and neither side's extremes decide how visible
    the other is (a map whose negative values are ten times larger still shows its
    positive evidence in full red). One extreme pixel does not flatten the rest.

    >>> norm = symmetric_norm(np.ma.masked_invalid(np.array([-10.0, 0.0, 1.0])), 100)
    >>> float(norm(-10.0)), float(norm(0.0)), float(norm(1.0))
    (0.0, 0.5, 1.0)
    """
    valid = values.compressed()

    def side(part: np.ndarray) -> float:
        limit = float(np.percentile(part, percentile)) if part.size else 0.0
        return limit if limit > 0 else 0.0

    up, down = side(valid[valid > 0]), side(-valid[valid < 0])
    if up == 0 and down == 0:
        return Normalize(-1.0, 1.0)
    return TwoSlopeNorm(0.0, -(down or up), up or down)


def colour_bar_png(
    cmap: str | Colormap, norm: Normalize, label: str, *, log: bool = False
) -> bytes:
    """A horizontal colour bar (about 300 x 60 px) with ticks, for the legend of a map."""
    from matplotlib.cm import ScalarMappable

    fig = plt.figure(figsize=(3.2, 0.62), dpi=100)
    # Margins that hold half of an end tick label ("-0.0356"), whose minus sign a 4 %
    # margin cut off, so the negative end of a signed scale read as positive.
    ax = fig.add_axes((0.1, 0.55, 0.78, 0.3))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=ax, orientation="horizontal")
    bar.ax.tick_params(labelsize=7)
    from matplotlib.ticker import StrMethodFormatter

    if log:  # plain numbers at 1-2-5 steps: "0.2 0.5 1 2", not overlapping powers of ten
        from matplotlib.ticker import LogLocator, NullFormatter

        bar.ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        bar.ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        bar.ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        if isinstance(norm, TwoSlopeNorm):  # ticks at the ends, halves and zero of each side
            low, high = cast(float, norm.vmin), cast(float, norm.vmax)  # set by symmetric_norm
            bar.set_ticks([low, low / 2, 0.0, high / 2, high])
        # Each tick its own number ("0.0791"): a shared multiplier ("1e-2") sat on the label.
        bar.ax.xaxis.set_major_formatter(StrMethodFormatter("{x:.3g}"))
    bar.set_label(label, fontsize=7, labelpad=1)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", transparent=True)
    plt.close(fig)
    return buffer.getvalue()


def colours_hex(values: np.ndarray, cmap: str | Colormap, norm: Normalize) -> list[str]:
    """``#rrggbb`` of each value under ``cmap``/``norm`` (for SVG markers).

    >>> colours_hex(np.array([0.0, 1.0]), "gray", Normalize(0, 1))
    ['#000000', '#ffffff']
    """
    from matplotlib.colors import to_hex

    return [to_hex(c) for c in plt.get_cmap(cmap)(norm(np.asarray(values, float)))]


def png_bytes(rgba: np.ndarray) -> bytes:
    """PNG of an (H, W, 3 or 4) float array in 0-1, with a palette of at most 256 colours.

    Map overlays come from a colour map, so a palette loses next to nothing and makes
    them about eight times smaller than true-colour PNGs.
    """
    return image_bytes(rgba, "png")


def image_bytes(rgb: np.ndarray, fmt: str, quality: int = 85) -> bytes:
    """``png`` (palette, with alpha) or ``jpeg`` bytes of an (H, W, 3 or 4) float array in 0-1."""
    from PIL import Image

    array = np.round(np.clip(np.nan_to_num(rgb), 0, 1) * 255).astype("uint8")
    image = Image.fromarray(array, "RGBA" if array.shape[-1] == 4 else "RGB")
    buffer = io.BytesIO()
    if fmt == "jpeg":
        image.convert("RGB").save(buffer, "JPEG", quality=quality)
    else:
        image.quantize(256, method=Image.Quantize.FASTOCTREE).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


# --- map furniture: coordinates, scale bar, north arrow, vector outlines -------------------------


@dataclass(frozen=True)
class MapFurniture:
    """What makes a map readable on its own: where it is, how big, which way is north.

    Positions are percentages of the map's width (``x_ticks``, the scale bar) or height
    (``y_ticks``) so that the page can draw them at any display size.
    """

    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    crs: str
    scale_pct: float
    scale_label: str
    north_deg: float


def map_furniture(grid: MapGrid, crs: object) -> MapFurniture:
    """Coordinate ticks in the map's CRS, a scale bar and the direction of true north.

    Ticks fall on round coordinates (matplotlib's ``MaxNLocator``), labelled in the CRS's
    unit (metres with thousands separators, degrees with their sign). The scale bar is a
    round ground distance (1, 2 or 5 times a power of ten) of at most a quarter of the map's
    width, measured on the ellipsoid (``pyproj.Geod``) along the map's middle row, so it is
    right in any CRS, geographic ones included. The north arrow points to true north at
    the map's centre (``north_deg`` clockwise from the top): grid north and true north
    differ away from a projection's central meridian.
    """
    from matplotlib.ticker import MaxNLocator
    from pyproj import CRS, Geod, Transformer

    crs = CRS.from_user_input(crs)
    left, bottom, right, top = grid.bounds
    locator = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10])
    geographic = crs.is_geographic

    def label(value: float, axis: str) -> str:
        if geographic:
            hemisphere = ("E", "W") if axis == "x" else ("N", "S")
            return f"{abs(value):g}°{hemisphere[0] if value >= 0 else hemisphere[1]}"
        return f"{value:,.0f}".replace(",", "\u2009")  # thin space between thousands

    x_ticks = [
        ((v - left) / (right - left) * 100, label(v, "x"))
        for v in locator.tick_values(left, right)
        if left <= v <= right
    ]
    y_ticks = [
        ((top - v) / (top - bottom) * 100, label(v, "y"))
        for v in locator.tick_values(bottom, top)
        if bottom <= v <= top
    ]
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    middle = (bottom + top) / 2
    (lon0, lon1), (lat0, lat1) = to_lonlat.transform([left, right], [middle, middle])
    geod = Geod(ellps="WGS84")
    width_m = geod.inv(lon0, lat0, lon1, lat1)[2]
    length = _round_length(width_m / 4)
    scale_label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    # true north: the azimuth, in map coordinates, of a short step north from the centre
    cx, cy = (left + right) / 2, middle
    clon, clat = to_lonlat.transform(cx, cy)
    nx, ny = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(clon, clat + 0.01)
    north_deg = float(np.degrees(np.arctan2(nx - cx, ny - cy)))
    unit = "degrees" if geographic else (crs.axis_info[0].unit_name if crs.axis_info else "")
    code = crs.to_epsg(min_confidence=70)
    name = f"EPSG:{code} ({crs.name})" if code else crs.name
    return MapFurniture(
        x_ticks, y_ticks, f"{name}, {unit}", length / width_m * 100, scale_label, north_deg
    )


def _round_length(metres: float) -> float:
    """The largest 1, 2 or 5 times a power of ten that is at most ``metres``.

    >>> _round_length(623.0), _round_length(3.1e3), _round_length(19.0)
    (500.0, 2000.0, 10.0)
    """
    power = 10 ** np.floor(np.log10(metres))
    return float(max(m * power for m in (1, 2, 5) if m * power <= metres))


def svg_paths(geometries: Iterable[Any], grid: MapGrid, simplify_px: float = 0.5) -> list[str]:
    """SVG path data of polygons and lines on the grid, in display pixels.

    Geometries are in the grid's CRS; each is clipped to the map (so a river that runs on
    for kilometres costs nothing), simplified to ``simplify_px`` and written as one path
    (``M x,y L ... Z`` per ring; lines are left open). Points become nothing.
    """
    import shapely
    from shapely import affinity

    inverse = ~grid.transform
    params = [inverse.a, inverse.b, inverse.d, inverse.e, inverse.c, inverse.f]
    frame = shapely.box(*grid.bounds)
    out = []
    for geometry in geometries:
        if geometry is None or geometry.is_empty:
            out.append("")
            continue
        shape = affinity.affine_transform(geometry.intersection(frame), params)
        shape = shape.simplify(simplify_px)
        parts = []
        for part in getattr(shape, "geoms", [shape]):
            if isinstance(part, shapely.Polygon):
                rings, close = [part.exterior, *part.interiors], " Z"
            elif isinstance(part, shapely.LineString):
                rings, close = [part], ""
            else:
                continue
            for ring in rings:
                xy = shapely.get_coordinates(ring)
                if len(xy):
                    parts.append("M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in xy) + close)
        out.append(" ".join(parts))
    return out
