"""Wall-to-wall maps of the probability of contamination, computed densely.

The map answers, at every pixel, "if a sample were taken here, how likely would it exceed
the rule?": the probability SI-LICNet gives the patch centred there. Evaluating one patch
per pixel would cost a full forward pass per pixel. SI-LICNet is local up to its one linear
pooling, so the same values come far cheaper: run the trunk once over the image and slide
the ring pooling over the trunk output as box sums (summed-area tables), then run the small
head per pixel. The stem has stride 2, so the trunk runs four times, once per phase
(row and column parity) of the patch corner; together the four passes cost about one
stride-1 pass over the image.

Conventions
-----------
- **Patch centred at pixel (i, j)**: the patch covers rows ``i - patch_px // 2`` to
  ``i - patch_px // 2 + patch_px - 1`` and the same for columns (the patch extractor and
  the sensitivity mosaic use the same rule). For an even ``patch_px`` the patch's centre
  is the upper-left corner of pixel (i, j).
- **Edges**: the map is NaN where the patch would cross the image edge (the first
  ``patch_px // 2`` and the last ``patch_px - 1 - patch_px // 2`` rows and columns) and
  where the patch holds a non-finite (nodata) pixel. No padding is invented: a value is
  given only where the model could see the whole patch.
- **Tiles**: :func:`probability_map_tile` computes one output tile from one input window,
  the tile plus a halo of ``patch_halo(patch_px)`` pixels, so a caller can read the imagery
  window by window (rasterio), write GeoTIFF blocks as they come, and hand tiles to Dask
  workers. :func:`probability_map` does this for an image already in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import rasterio
import torch
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from torch import Tensor, nn

from soilsource.data.labels import gb15618_screening_value
from soilsource.data.patches import BandStats, read_windows
from soilsource.data.target import LogNormalLink
from soilsource.gisout import Kind, RasterStyle, cog_path
from soilsource.inputs import RasterInfo
from soilsource.models.modelio import ModelState, model_state
from soilsource.models.registry import network_spec
from soilsource.models.silicnet import STEM_STRIDE, SILICNet
from soilsource.progress import track
from soilsource.runtime import Session, session_or_local

__all__ = [
    "MapRule",
    "patch_halo",
    "probability_map",
    "probability_map_tile",
    "probability_tile_task",
    "write_probability_map",
]


TILE_PX = 256
"""Default side of a map tile: smaller tiles hold fewer activations and, measured, are
faster too, until the patch's halo dominates (``benchmarks/bench_map_tiles.py``, in
docs/benchmarks.md: seconds per million pixels and MB per tile for 128, 256 and 512 px
tiles, 43 and 128 px patches). The map is the same whatever the tile."""


def patch_halo(patch_px: int) -> tuple[int, int]:
    """Pixels of context a patch needs before and after its centre pixel, per axis.

    Output rows ``r0 .. r1 - 1`` of the map need input rows ``r0 - before`` to
    ``r1 - 1 + after``.

    >>> patch_halo(128), patch_halo(5)
    ((64, 63), (2, 2))
    """
    return patch_px // 2, patch_px - 1 - patch_px // 2


def _check(model: SILICNet, channels: int, patch_px: int | None) -> int:
    entry = network_spec(model)
    if entry is None or not entry.dense_maps:
        raise TypeError(f"dense maps need a SILICNet, got {type(model).__name__}")
    if patch_px is not None and patch_px != model.patch_px:
        raise ValueError(f"patch_px={patch_px} but the model was built for {model.patch_px} px")
    if channels != model.in_channels:
        raise ValueError(f"the image has {channels} bands, the model expects {model.in_channels}")
    return model.patch_px


def probability_map_tile(
    model: SILICNet,
    window: np.ndarray | Tensor,
    patch_px: int | None = None,
    *,
    raw: bool = False,
) -> np.ndarray:
    """Probabilities of every patch lying wholly inside an input window.

    Parameters
    ----------
    model:
        A SILICNet (run in evaluation mode; its mode is restored).
    window:
        ``(C, h, w)`` normalised imagery: the output tile plus its halo
        (:func:`patch_halo`) on each side.
    patch_px:
        Optional check that the model was built for this patch size.
    raw:
        Return the model's raw output (a logit, or for a model of the concentration its
        standardised log value) instead of ``sigmoid`` of it.

    Returns
    -------
    numpy.ndarray
        ``(h - patch_px + 1, w - patch_px + 1)`` float32; element ``(r, c)`` is the patch
        whose upper-left pixel is window pixel ``(r, c)``, i.e. centred at window pixel
        ``(r + patch_px // 2, c + patch_px // 2)``. NaN where that patch holds a non-finite
        pixel. Empty when the window is smaller than a patch.

    Examples
    --------
    >>> from soilsource.models import SILICNet
    >>> model = SILICNet(3, patch_px=16)
    >>> probability_map_tile(model, np.zeros((3, 20, 25), np.float32)).shape
    (5, 10)
    """
    size = _check(model, window.shape[0], patch_px)
    param = next(model.parameters())
    x = torch.as_tensor(window).to(device=param.device, dtype=param.dtype)
    h, w = x.shape[-2:]
    oh, ow = max(h - size + 1, 0), max(w - size + 1, 0)
    out = torch.full((oh, ow), float("nan"), dtype=param.dtype, device=param.device)
    if oh and ow:
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                out = _dense_outputs(model, x, squash=not raw)
        finally:
            model.train(was_training)
    return out.cpu().numpy()


def _dense_outputs(model: SILICNet, x: Tensor, squash: bool = True) -> Tensor:
    """The body of :func:`probability_map_tile` for a window of at least one patch."""
    size = model.patch_px
    h, w = x.shape[-2:]
    oh, ow = h - size + 1, w - size + 1
    finite = torch.isfinite(x).all(dim=0)
    x = torch.where(finite, x, 0.0)
    stages = model.inference_stages()
    out = x.new_empty((oh, ow))
    for py in range(STEM_STRIDE):
        for px in range(STEM_STRIDE):
            ny, nx = len(range(py, oh, STEM_STRIDE)), len(range(px, ow, STEM_STRIDE))
            if not ny or not nx:
                continue
            # Patch corners py, py + 2, ...: their stem cells are one grid, shared.
            sub = x[
                :, py : py + STEM_STRIDE * (ny - 1) + size, px : px + STEM_STRIDE * (nx - 1) + size
            ]
            act = sub[None].contiguous(memory_format=torch.channels_last)
            for stage in stages:
                act = stage(act)
            logits = _sliding_logits(model, act[0], ny, nx)
            values = torch.sigmoid(logits) if squash else logits
            out[py::STEM_STRIDE, px::STEM_STRIDE] = values.view(ny, nx)
    nodata = _box_any(~finite, size)
    return out.masked_fill_(nodata, float("nan"))


def _sliding_logits(model: SILICNet, features: Tensor, ny: int, nx: int) -> Tensor:
    """Logits ``(ny * nx,)`` of the patches whose trunk outputs are the windows of ``features``.

    ``features`` is one phase's trunk output ``(D, h, w)``; window ``(i, j)`` covers cells
    ``i .. i + grid - 1``, ``j .. j + grid - 1``. Every pooled element (a ring, or a ring's
    quadrant) is a fixed combination of box sums ``B_j`` (a ring: the difference of two
    centred squares over its cell count; :class:`~soilsource.models.RingPooling`), and the
    head's first layer is linear, so the two are folded: the layer is applied to the box
    sums directly, with weights ``sum_e W_e A_ej``. This needs one box sum per box and
    channel and no ring means, which halves the time of the dense map
    (``benchmarks/bench_dense_map.py``). Box sums come from a float64 summed-area table,
    so differences of large sums keep float32 accuracy; the sums themselves are moderate
    and go to float32 for the matrix product.
    """
    pool, first = model.pool, cast(nn.Linear, model.head[0])
    d = features.shape[0]
    sums = pool.box_sums(features[None], features.dtype)[0, :, :, :ny, :nx]  # (D, J, ny, nx)
    # h = sum_e W_e (sum_j A_ej B_j)  =  sum_j B_j (sum_e W_e A_ej)
    per_element = first.weight.double().view(-1, d, pool.n_elements)
    folded = torch.einsum("hde,ej->hdj", per_element, pool.box_weights)
    hidden = torch.addmm(
        first.bias[:, None],
        folded.to(features.dtype).flatten(1),
        sums.reshape(-1, ny * nx),
    )
    return model.head[1:](hidden.T).squeeze(-1)


def _box_any(mask: Tensor, size: int) -> Tensor:
    """Whether each ``size`` x ``size`` window of a 2-D boolean mask holds a True."""
    sat = torch.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=torch.int64, device=mask.device)
    sat[1:, 1:] = mask.long().cumsum(0).cumsum(1)
    total = sat[size:, size:] - sat[:-size, size:] - sat[size:, :-size] + sat[:-size, :-size]
    return total > 0


def probability_map(
    model: SILICNet,
    image: np.ndarray | Tensor,
    patch_px: int | None = None,
    *,
    tile_px: int = TILE_PX,
    progress: bool = False,
    raw: bool = False,
) -> np.ndarray:
    """Probability of contamination of the patch centred at each pixel of an image.

    Parameters
    ----------
    model:
        A trained SILICNet (evaluation mode is used; its mode is restored).
    image:
        ``(C, H, W)`` imagery, normalised like the training patches; NaN marks nodata.
    patch_px:
        Optional check that the model was built for this patch size.
    tile_px:
        Side of the output tiles computed at once (:data:`TILE_PX`); memory grows with
        ``(tile_px + patch_px) ** 2``.
    progress:
        Show a progress bar on stderr.
    raw:
        The model's raw output instead of its sigmoid (see :func:`probability_map_tile`).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32; NaN where the patch would cross the image edge or holds nodata.
        Equal, within float32 rounding, to ``sigmoid(model(patch))`` for every patch.

    Examples
    --------
    >>> from soilsource.models import SILICNet
    >>> model = SILICNet(2, patch_px=16)
    >>> prob = probability_map(model, np.zeros((2, 40, 30), np.float32))
    >>> prob.shape, bool(np.isnan(prob[7, 10])), bool(np.isnan(prob[8, 10]))
    ((40, 30), True, False)
    """
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    if tile_px < 1:
        raise ValueError(f"tile_px must be >= 1, got {tile_px}")
    size = _check(model, image.shape[0], patch_px)
    _, h, w = image.shape
    before, after = patch_halo(size)
    out = np.full((h, w), np.nan, dtype=np.float32)
    rows, cols = range(before, h - after), range(before, w - after)  # centres of whole patches
    tiles = [(r, c) for r in rows[::tile_px] for c in cols[::tile_px]]
    for r0, c0 in track(tiles, "probability map") if progress else tiles:
        r1, c1 = min(r0 + tile_px, rows.stop), min(c0 + tile_px, cols.stop)
        window = image[:, r0 - before : r1 + after, c0 - before : c1 + after]
        if isinstance(window, np.ndarray):
            window = np.ascontiguousarray(window)
        out[r0:r1, c0:c1] = probability_map_tile(model, window, raw=raw)
    return out


@dataclass(frozen=True)
class MapRule:
    """How a model of the concentration turns into the maps' probability and median.

    ``limits`` (mg/kg) with ``weights`` summing to 1: the probability of a pixel is
    ``sum_i w_i P(value > limit_i)``. A fixed threshold is one limit; under a pH-dependent
    rule without a pH raster, the limits at the region's sample-median pH for paddy and
    other land, weighted by the region's paddy share (``note`` says so, and goes into
    the rasters' metadata). With a pH raster (``ph_path``, the ``mapping.ph`` of the
    configuration), each pixel's limits come from its own pH (GB 15618-2018 for
    ``metal``), for paddy and other land, weighted by ``weights`` (the paddy share); the
    raster is resampled (bilinear) onto the imagery's grid; no pH, no probability.
    """

    link: LogNormalLink
    limits: tuple[float, ...]
    weights: tuple[float, ...]
    note: str = ""
    ph_path: Path | None = None
    metal: str = "Cd"

    def probability(self, z: np.ndarray, ph: np.ndarray | None = None) -> np.ndarray:
        if self.ph_path is None:
            pairs: Iterable[tuple[Any, float]] = zip(self.limits, self.weights, strict=True)
        else:
            if ph is None:
                raise ValueError("this map's limits come from a pH raster: give its pH")
            flags = (np.ones_like(ph), np.zeros_like(ph))  # paddy, then other land
            pairs = zip(
                (gb15618_screening_value(self.metal, ph, f) for f in flags),
                self.weights,
                strict=True,
            )
        out = np.zeros(z.shape, dtype=np.float64)
        for limit, weight in pairs:
            if weight > 0:
                out += weight * self.link.exceedance(z, limit)
        return out

    def tags(self) -> dict[str, str]:
        limits = ", ".join(repr(float(v)) for v in self.limits)
        weights = ", ".join(repr(float(w)) for w in self.weights)
        tags = {"LIMITS_MG_KG": limits, "LIMIT_WEIGHTS": weights, "LIMIT_NOTE": self.note}
        if self.ph_path is not None:
            tags["PH_RASTER"] = str(self.ph_path)
        return tags

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (saved with the model, so that ``predict`` maps with the same rule)."""
        return {
            "limits": [float(v) for v in self.limits],
            "weights": [float(w) for w in self.weights],
            "note": self.note,
            "ph_path": None if self.ph_path is None else str(self.ph_path),
            "metal": self.metal,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], link: LogNormalLink) -> MapRule:
        """Inverse of :meth:`to_dict`, with the model's link."""
        ph = data.get("ph_path")
        return cls(
            link,
            tuple(float(v) for v in data["limits"]),
            tuple(float(w) for w in data["weights"]),
            str(data.get("note", "")),
            None if ph is None else Path(ph),
            str(data.get("metal", "Cd")),
        )

    def read_ph(self, raster: RasterInfo, window: Window) -> np.ndarray | None:
        """The pH raster on ``window`` of ``raster``'s grid (NaN where it has no data)."""
        if self.ph_path is None:
            return None
        with (
            rasterio.open(self.ph_path) as src,
            WarpedVRT(
                src,
                crs=raster.crs,
                transform=raster.transform,
                width=raster.width,
                height=raster.height,
                resampling=Resampling.bilinear,
                src_nodata=src.nodata,
                nodata=np.nan,
                dtype="float64",
            ) as vrt,
        ):
            return vrt.read(1, window=window).astype(np.float64)


def write_probability_map(
    path: str | os.PathLike[str],
    model: SILICNet,
    stats: BandStats,
    raster: RasterInfo,
    *,
    max_nodata_share: float = 0.5,
    tile_px: int = TILE_PX,
    threads: int = 1,
    progress: bool = True,
    session: Session | None = None,
    rule: MapRule | None = None,
    concentration_path: str | os.PathLike[str] | None = None,
    rule_text: str = "",
    model_text: str = "",
) -> Path:
    """Write the wall-to-wall probability map of one raster as a float32 Cloud-Optimised GeoTIFF.

    Each output tile is one task (:mod:`soilsource.runtime`): the task reads its own
    window of the imagery (the tile plus its halo, boundless windowed reads of
    :func:`soilsource.data.patches.read_windows`), scales it with the model's band statistics
    and returns the tile; this process writes tiles block by block as they arrive, in
    tile order, with a bounded number of tasks in flight. Memory stays bounded however
    large the raster is, and the file is the same whether the tasks ran here or on a
    Dask cluster. The model travels to the tasks as plain weights
    (:func:`~soilsource.models.modelio.model_state`).

    Patches are treated as in training: pixels without data (nodata, or beyond the raster
    edge) take the band mean, and a pixel's value is NaN (the file's nodata) where more
    than ``max_nodata_share`` of its patch has no data, the rule that left samples out.
    Near the raster edge, where a patch crosses it, the value is therefore kept while at
    least half of the patch lies on valid imagery.

    Parameters
    ----------
    tile_px:
        Side of the output tiles (one task each, :data:`TILE_PX`); a task holds about
        ``(tile_px + patch_px) ** 2`` pixels of trunk activations.
    threads:
        GDAL reading threads per task.
    session:
        Where the tiles are computed; None opens a local session for this call.
    rule, concentration_path:
        For a model of the concentration: how its output becomes the probability
        (:class:`MapRule`), and where the predicted median concentration (mg/kg) goes,
        written in the same pass. None for a classifier (probability = sigmoid).
    rule_text, model_text:
        The rule the probability refers to (default: ``rule.note``) and the model that
        made the maps, for the files' ``RULE`` and ``MODEL`` tags
        (:class:`~soilsource.gisout.RasterStyle`); each file gets its QGIS style beside it.
    """
    if tile_px < 1:
        raise ValueError(f"tile_px must be >= 1, got {tile_px}")
    _check(model, raster.count, None)
    profile = map_profile(raster)
    tiles = [
        (r, c) for r in range(0, raster.height, tile_px) for c in range(0, raster.width, tile_px)
    ]
    job = _MapJob(model_state(model), stats, raster, tile_px, max_nodata_share, threads, rule)
    path = Path(path)
    rule_text = rule_text or (rule.note if rule is not None else "")
    outputs: list[tuple[Path, Kind, str, str]] = [
        (path, "probability", "probability of exceeding the rule", "1"),
    ]
    if rule is not None and concentration_path is not None:
        outputs.append(
            (Path(concentration_path), "concentration", "predicted median concentration", "mg/kg")
        )
    with ExitStack() as stack:
        runner = stack.enter_context(session_or_local(session))
        files = []
        for target, kind, quantity, units in outputs:
            style = RasterStyle(kind, quantity, units, rule_text, model_text)
            tmp = stack.enter_context(cog_path(target, style))
            dst = stack.enter_context(rasterio.open(tmp, "w", **profile))
            description = quantity + (", mg/kg" if units == "mg/kg" else "")
            dst.set_band_description(1, description)
            if rule is not None:
                dst.update_tags(**rule.tags())
            files.append(dst)
        results = runner.map(probability_tile_task, tiles, shared=job)
        steps = track(results, f"probability map {path.stem}", total=len(tiles))
        for (r0, c0), layers in zip(tiles, steps if progress else results, strict=True):
            for dst, layer in zip(files, layers, strict=False):
                dst.write(layer, 1, window=Window(c0, r0, layer.shape[1], layer.shape[0]))
    return path


def map_profile(raster: RasterInfo) -> dict:
    """GeoTIFF profile of a float32 map on ``raster``'s grid: tiled, deflate, NaN nodata."""
    return {
        "driver": "GTiff",
        "dtype": "float32",
        "count": 1,
        "width": raster.width,
        "height": raster.height,
        "crs": raster.crs,
        "transform": raster.transform,
        "nodata": float("nan"),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 3,
    }


@dataclass(frozen=True)
class _MapJob:
    """What every tile task of one map shares (sent to each worker once)."""

    model: ModelState
    stats: BandStats
    raster: RasterInfo
    tile_px: int
    max_nodata_share: float
    threads: int
    rule: MapRule | None = None


def probability_tile_task(job: _MapJob, tile: tuple[int, int]) -> np.ndarray:
    """One tile of :func:`write_probability_map`, read and computed where the task runs.

    ``tile`` is the output tile's upper-left pixel; the result is ``(1, h, w)`` float32
    probabilities (``(2, h, w)`` with the median concentration for a model of the
    concentration), clipped to the raster, NaN where too much of the patch has no data.
    """
    r0, c0 = tile
    raster, size = job.raster, job.model.init_kwargs["patch_px"]
    before, _ = patch_halo(size)
    h, w = min(job.tile_px, raster.height - r0), min(job.tile_px, raster.width - c0)
    window = read_windows(
        raster,
        np.array([r0 - before]),
        np.array([c0 - before]),
        job.tile_px + size - 1,
        threads=job.threads,
    )
    model = cast(SILICNet, job.model.build())  # ModelState of a network with dense maps
    out = probability_map_tile(model, job.stats.transform(window)[0], raw=job.rule is not None)
    out = out[:h, :w].astype(np.float64)
    if job.rule is None:
        layers = out[None]
    else:
        ph = job.rule.read_ph(raster, Window(c0, r0, w, h))
        layers = np.stack([job.rule.probability(out, ph), job.rule.link.median(out)])
    share = _box_mean(window.valid[0].astype(np.float64), size)[:h, :w]
    layers[:, share < 1.0 - job.max_nodata_share] = np.nan
    return layers.astype(np.float32, copy=False)


def _box_mean(values: np.ndarray, size: int) -> np.ndarray:
    """Mean of every ``size`` x ``size`` box (upper-left anchored) by a summed-area table."""
    table = np.zeros((values.shape[0] + 1, values.shape[1] + 1))
    table[1:, 1:] = values.cumsum(0).cumsum(1)
    sums = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    return sums / (size * size)
