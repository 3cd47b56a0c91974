"""Square image patches centred on soil samples, with validity masks and band statistics.

A patch is a window of ``patch.size_m`` metres (``size_px`` pixels) in the
raster's own pixel grid, centred on the sample: for an odd size the sample's
pixel is the centre pixel, for an even size the grid corner nearest the sample
is the centre. Windows that cross the raster's edge, or cover nodata, are
zero-filled where there is no data and marked in ``valid``; they are never
dropped silently, so patch ``i`` always belongs to sample ``i``.

The maths (window origins, statistics, normalisation) is separate from the I/O
(:func:`read_windows`), in the style of TorchGeo's samplers and datasets:

>>> import numpy as np
>>> patch_origins(np.array([10.3]), np.array([4.0]), 3)
(array([9]), array([3]))

Reading is windowed (never the whole raster), in raster block order so that
each block is decoded about once, and shared among threads by bands of columns,
each thread with its own dataset handle and block cache (GDAL releases the GIL
while it reads); see :class:`PatchReader`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window

from soilsource.errors import InputError
from soilsource.inputs.imagery import RasterInfo, describe_raster, gdal_reason


@dataclass
class Patches:
    """Patches of ``N`` samples from one raster.

    Attributes
    ----------
    data:
        float32 ``(N, C, S, S)``: physical values (scale and offset applied),
        0 where ``valid`` is False.
    valid:
        bool ``(N, S, S)``: True where every band has data.
    row_off, col_off:
        int64 ``(N,)``: the window origin of each patch in the raster grid.
    index:
        int64 ``(N,)``: position of each patch's sample in the points given.
    band_names:
        Names of the ``C`` bands.
    """

    data: np.ndarray
    valid: np.ndarray
    row_off: np.ndarray
    col_off: np.ndarray
    index: np.ndarray
    band_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def size_px(self) -> int:
        """Side of each patch in pixels."""
        return int(self.data.shape[-1])

    @property
    def nodata_share(self) -> np.ndarray:
        """Share of each patch's pixels without data (outside the raster or nodata)."""
        return 1.0 - self.valid.reshape(len(self), -1).mean(axis=1)

    def read(self, index: np.ndarray | slice | None = None) -> Patches:
        """The patches at ``index`` (all, these very arrays, when None), as
        :meth:`PatchStore.read` gives them: code that reads pixels once takes either."""
        return self if index is None else self.subset(np.arange(len(self))[index])

    def subset(self, index: np.ndarray | Sequence[int]) -> Patches:
        """The patches at positions ``index`` (numpy indexing: copies)."""
        index = np.asarray(index)
        return Patches(
            self.data[index],
            self.valid[index],
            self.row_off[index],
            self.col_off[index],
            self.index[index],
            self.band_names,
        )


def patch_size_px(size_m: float, raster: RasterInfo) -> int:
    """Patch side in pixels of ``raster`` for a side of ``size_m`` metres (at least 1).

    >>> from affine import Affine
    >>> from pyproj import CRS
    >>> from pathlib import Path
    >>> grid = RasterInfo(Path("x.tif"), CRS.from_epsg(28992), Affine(40, 0, 0, 0, -40, 0),
    ...                   10, 10, 1, "uint8", (None,), (1.0,), (0.0,), ("b",), (10, 10))
    >>> patch_size_px(960, grid)
    24
    """
    return max(1, round(size_m / raster.pixel_size_m))


def one_patch_size(sizes: set[int], size_m: float, source: str | PathLike[str]) -> int:
    """The patch side in pixels shared by every raster, or an :class:`InputError`.

    Rasters of different resolution give different patch sizes; one model input size
    per run keeps pooled training and the baselines comparable (``check`` and ``run``
    refuse it alike).

    >>> one_patch_size({24}, 960, "config.yaml")
    24
    """
    if len(sizes) != 1:
        raise InputError(
            source,
            "key 'imagery.path'",
            f"rasters of different pixel sizes give patches of {sorted(sizes)} px for "
            f"patch.size_m = {size_m:g}; resample the imagery to one resolution",
        )
    return next(iter(sizes))


def patch_origins(
    rows: np.ndarray, cols: np.ndarray, size_px: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-left pixel of the ``size_px`` window centred on fractional pixel positions.

    For odd sizes the pixel containing ``p`` is the centre pixel; for even sizes the grid
    corner nearest ``p`` is the centre, and a tie (a point at a pixel's centre) goes to the
    pixel's upper-left corner. That is the rule of :mod:`soilsource.mapping.probability`: the
    patch of a sample in pixel ``(i, j)`` (at its centre, for even sizes) is the one the probability
    map gives at ``(i, j)``, rows ``i - size // 2`` to ``i - size // 2 + size - 1``.

    >>> patch_origins(np.array([10.3, 10.5, 10.6]), np.array([0.2, 0.2, 0.2]), 4)
    (array([8, 8, 9]), array([-2, -2, -2]))
    """

    def origin(p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=float)
        centre = np.floor(p) if size_px % 2 else np.ceil(p - 0.5)
        return centre.astype(np.int64) - size_px // 2

    return origin(rows), origin(cols)


def block_order(
    row_off: np.ndarray, col_off: np.ndarray, block_shape: tuple[int, int]
) -> np.ndarray:
    """Order that visits windows block row by block row, so each block is read once.

    >>> block_order(np.array([300, 0, 10]), np.array([0, 300, 0]), (256, 256)).tolist()
    [2, 1, 0]
    """
    block_h, block_w = block_shape
    return np.lexsort(
        (col_off, np.floor_divide(col_off, block_w), np.floor_divide(row_off, block_h))
    )


def extract_patches(
    raster: str | PathLike[str] | RasterInfo,
    points_xy: np.ndarray,
    size_px: int,
    *,
    threads: int = 2,
) -> Patches:
    """Read the ``size_px`` patch around each point (given in the raster's CRS).

    Parameters
    ----------
    raster:
        The raster (path or :class:`~soilsource.inputs.RasterInfo`).
    points_xy:
        ``(N, 2)`` x, y in the raster's CRS (see
        :func:`soilsource.inputs.reproject_points`).
    size_px:
        Side of the square patches in pixels.
    threads:
        Reader threads, each with its own dataset handle.

    Returns
    -------
    Patches
        In the order of ``points_xy`` (``index`` is ``0..N-1``).
    """
    info = raster if isinstance(raster, RasterInfo) else describe_raster(raster)
    row_off, col_off = _origins(info, points_xy, size_px)
    with PatchReader(info, size_px, threads=threads) as reader:
        return reader.read(row_off, col_off)


def iter_patches(
    raster: str | PathLike[str] | RasterInfo,
    points_xy: np.ndarray,
    size_px: int,
    *,
    batch_size: int = 256,
    threads: int = 2,
    reuse: bool = False,
) -> Iterator[Patches]:
    """Patches in batches of ``batch_size``, in raster block order, in bounded memory.

    Each batch's ``index`` gives the positions of its samples in ``points_xy``.
    Use it when all patches together would not fit in memory. With ``reuse``,
    every full batch is written into the same arrays (faster; copy what you keep).
    """
    info = raster if isinstance(raster, RasterInfo) else describe_raster(raster)
    row_off, col_off = _origins(info, points_xy, size_px)
    order = block_order(row_off, col_off, info.block_shape)
    buffer = None
    with PatchReader(info, size_px, threads=threads) as reader:
        reader.split_columns(col_off)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            out = buffer if reuse and buffer is not None and len(buffer) == len(batch) else None
            patches = reader.read(row_off[batch], col_off[batch], out=out)
            patches.index = batch
            buffer = patches
            yield patches


def read_windows(
    raster: RasterInfo,
    row_off: np.ndarray,
    col_off: np.ndarray,
    size_px: int,
    *,
    threads: int = 2,
) -> Patches:
    """Read square windows with the given origins (the I/O half of :func:`extract_patches`)."""
    with PatchReader(raster, size_px, threads=threads) as reader:
        return reader.read(row_off, col_off)


def _origins(info: RasterInfo, points_xy: np.ndarray, size_px: int):
    points_xy = np.asarray(points_xy, dtype=float).reshape(-1, 2)
    rows, cols = info.pixel_of(points_xy[:, 0], points_xy[:, 1])
    return patch_origins(rows, cols, size_px)


class PatchReader:
    """Reads windows of one size from one raster; open datasets and decoded blocks persist.

    Windows are clipped to the raster, read, converted to float32 with the band
    scale and offset, and placed in zero-filled arrays; pixels outside the raster
    or with nodata (per-band nodata, NaN, or a GDAL mask / alpha band) are invalid.

    Two ways to read, chosen per call from what the windows touch:

    - *blocks*: each raster block a window touches is read whole (GDAL's fast
      path), kept in a small per-thread cache that drops block rows behind the
      current one, and patches are cut from it with numpy. Best when windows are
      dense (several per block), the usual case for samples in a region.
    - *windows*: one GDAL windowed read per patch. Best for a few scattered
      windows on a raster with large blocks (e.g. full-width strips).

    Use as a context manager; each thread holds its own dataset handle.

    Raises
    ------
    InputError
        The raster cannot be read (e.g. a corrupt or truncated file).
    """

    def __init__(self, raster: RasterInfo, size_px: int, *, threads: int = 2) -> None:
        self.raster = raster
        self.size = int(size_px)
        self.threads = max(1, int(threads))
        self._workers: list[_Worker] = []
        self._split: np.ndarray | None = None

    def split_columns(self, col_off: np.ndarray) -> None:
        """Share raster columns among the threads by quantiles of all windows to come.

        Each thread then keeps to its own band of columns across calls, so its
        block cache serves it and no block is read by two threads (but for
        windows on a boundary); quantiles keep the work even for clustered samples.
        """
        col_off = np.asarray(col_off)
        levels = np.linspace(0, 1, self.threads + 1)[1:-1]
        self._split = np.quantile(col_off, levels) if len(col_off) else np.zeros(0)

    def __enter__(self) -> PatchReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the datasets and drop the cached blocks."""
        for worker in self._workers:
            worker.close()
        self._workers = []

    def read(self, row_off: np.ndarray, col_off: np.ndarray, out: Patches | None = None) -> Patches:
        """Patches whose top-left pixels are ``(row_off, col_off)``, in the order given.

        ``out``, a :class:`Patches` of the same shape, is filled in place and
        returned (no new memory: re-using one batch buffer saves the page faults of
        fresh arrays, about a third of the time for large patches).
        """
        raster = self.raster
        row_off = np.asarray(row_off, dtype=np.int64)
        col_off = np.asarray(col_off, dtype=np.int64)
        n = len(row_off)
        shape = (n, raster.count, self.size, self.size)
        if out is None:
            data = np.zeros(shape, dtype=np.float32)
            valid = np.zeros((n, self.size, self.size), dtype=bool)
        else:
            if out.data.shape != shape:
                raise ValueError(f"out has shape {out.data.shape}, expected {shape}")
            data, valid = out.data, out.valid
            edge = (
                (row_off < 0)
                | (col_off < 0)
                | (row_off + self.size > raster.height)
                | (col_off + self.size > raster.width)
            )
            data[edge] = 0.0  # inside patches are overwritten pixel by pixel
            valid[edge] = False
        order = block_order(row_off, col_off, raster.block_shape)
        threads = max(1, min(self.threads, math.ceil(n / 16)))  # few windows: one thread
        while len(self._workers) < threads:
            self._workers.append(_Worker(raster))
        by_blocks = self._blocks_pay_off(row_off, col_off)
        if threads == 1:
            chunks = [order]
        else:
            split = self._split
            if split is None:
                levels = np.linspace(0, 1, self.threads + 1)[1:-1]
                split = np.quantile(col_off, levels)
            part = np.searchsorted(split, col_off[order], side="right") * threads // self.threads
            chunks = [order[part == t] for t in range(threads)]
        jobs = [
            (worker, chunk, row_off, col_off, self.size, data, valid, by_blocks)
            for worker, chunk in zip(self._workers, chunks, strict=False)
        ]
        if threads == 1:
            _run(jobs[0])
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(_run, jobs))
        if out is None:
            return Patches(data, valid, row_off, col_off, np.arange(n), raster.band_names)
        out.row_off, out.col_off, out.index = row_off, col_off, np.arange(n)
        return out

    def _blocks_pay_off(self, row_off: np.ndarray, col_off: np.ndarray) -> bool:
        """True when reading whole blocks moves fewer pixels than windowed reads would.

        A windowed read costs about 3 times a whole-block read per pixel (measured
        on pixel-interleaved, tiled GeoTIFF: 6.5 vs 2.5 ns), hence the factor.
        """
        block_h, block_w = self.raster.block_shape
        blocks = _touched_blocks(row_off, col_off, self.size, self.raster)
        return len(blocks) * block_h * block_w <= 3 * len(row_off) * self.size**2


def _touched_blocks(row_off, col_off, size, raster: RasterInfo) -> set[tuple[int, int]]:
    block_h, block_w = raster.block_shape
    r0 = np.clip(row_off, 0, raster.height - 1) // block_h
    r1 = np.clip(row_off + size - 1, 0, raster.height - 1) // block_h
    c0 = np.clip(col_off, 0, raster.width - 1) // block_w
    c1 = np.clip(col_off + size - 1, 0, raster.width - 1) // block_w
    touched: set[tuple[int, int]] = set()
    for a, b, c, d in zip(r0.tolist(), r1.tolist(), c0.tolist(), c1.tolist(), strict=True):
        touched.update((r, col) for r in range(a, b + 1) for col in range(c, d + 1))
    return touched


def _run(job) -> None:
    worker, chunk, row_off, col_off, size, data, valid, by_blocks = job
    worker.read(chunk, row_off, col_off, size, data, valid, by_blocks)


class _Worker:
    """One thread's dataset handle and block cache."""

    def __init__(self, raster: RasterInfo) -> None:
        self.raster = raster
        self.src: Any = None  # rasterio's dataset, opened in the thread that reads
        self.mode = "none"
        self.blocks: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]] = {}
        scales = np.asarray(raster.scales, dtype=np.float32)
        offsets = np.asarray(raster.offsets, dtype=np.float32)
        self.identity = bool(np.all(scales == 1) and np.all(offsets == 0))
        self.scales = scales[:, None, None]
        self.offsets = offsets[:, None, None]
        self.is_float = np.issubdtype(np.dtype(raster.dtype), np.floating)

    def close(self) -> None:
        if self.src is not None:
            self.src.close()
            self.src = None
        self.blocks.clear()

    def read(self, chunk, row_off, col_off, size, data, valid, by_blocks) -> None:
        if len(chunk) == 0:
            return
        path = self.raster.read_path
        try:
            # Uncompressed GeoTIFFs: read straight into our arrays, not via GDAL's block
            # cache (we keep our own); ignored for other formats. Thread-local here.
            with rasterio.Env(GTIFF_DIRECT_IO="YES"):
                if self.src is None:
                    self.src = rasterio.open(path)
                    self.mode = _mask_mode(self.src)
                for i in chunk.tolist():
                    r0, c0 = int(row_off[i]), int(col_off[i])
                    if by_blocks:
                        self._from_blocks(i, r0, c0, size, data, valid)
                    else:
                        self._from_window(i, r0, c0, size, data, valid)
        except RasterioError as exc:
            raise InputError(path, "", f"cannot read pixels: {gdal_reason(exc)}") from None

    def _from_window(self, i, r0, c0, size, data, valid) -> None:
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + size, self.raster.height), min(c0 + size, self.raster.width)
        if rr1 <= rr0 or cc1 <= cc0:  # entirely outside: all invalid, zeros
            return
        window = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
        y0, x0 = rr0 - r0, cc0 - c0
        target = data[i, :, y0 : y0 + rr1 - rr0, x0 : x0 + cc1 - cc0]
        if target.flags.c_contiguous:  # GDAL converts to float32 straight into the patch
            self.src.read(window=window, out=target)
        else:
            target[...] = self.src.read(window=window, out_dtype=np.float32)
        ok = _valid_pixels(self.src, target, window, self.mode, self.raster.nodata, self.is_float)
        if not self.identity:
            target *= self.scales
            target += self.offsets
        if ok is None:
            valid[i, y0 : y0 + rr1 - rr0, x0 : x0 + cc1 - cc0] = True
        else:
            np.copyto(target, 0.0, where=~ok)
            valid[i, y0 : y0 + rr1 - rr0, x0 : x0 + cc1 - cc0] = ok

    def _from_blocks(self, i, r0, c0, size, data, valid) -> None:
        block_h, block_w = self.raster.block_shape
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + size, self.raster.height), min(c0 + size, self.raster.width)
        if rr1 <= rr0 or cc1 <= cc0:
            return
        first_row = rr0 // block_h
        stale = [key for key in self.blocks if key[0] < first_row]
        for key in stale:  # windows come in block-row order: rows above are done
            del self.blocks[key]
        for block_row in range(first_row, (rr1 - 1) // block_h + 1):
            top = block_row * block_h
            for block_col in range(cc0 // block_w, (cc1 - 1) // block_w + 1):
                left = block_col * block_w
                pixels, ok = self._block(block_row, block_col)
                ys = slice(max(rr0, top) - top, min(rr1, top + pixels.shape[1]) - top)
                xs = slice(max(cc0, left) - left, min(cc1, left + pixels.shape[2]) - left)
                self._put(
                    pixels[:, ys, xs],
                    None if ok is None else ok[ys, xs],
                    data[i],
                    valid[i],
                    top + ys.start - r0,
                    left + xs.start - c0,
                )

    def _block(self, block_row: int, block_col: int):
        key = (block_row, block_col)
        if key not in self.blocks:
            block_h, block_w = self.raster.block_shape
            top, left = block_row * block_h, block_col * block_w
            window = Window(
                left,
                top,
                min(block_w, self.raster.width - left),
                min(block_h, self.raster.height - top),
            )
            pixels = self.src.read(window=window)
            ok = _valid_pixels(
                self.src, pixels, window, self.mode, self.raster.nodata, self.is_float
            )
            self.blocks[key] = (pixels, ok)
        return self.blocks[key]

    def _put(self, pixels, ok, data_i, valid_i, y0: int, x0: int) -> None:
        """Copy native pixels into one patch at (y0, x0), as float32 with scale/offset."""
        h, w = pixels.shape[1:]
        target = data_i[:, y0 : y0 + h, x0 : x0 + w]
        if self.identity:
            target[...] = pixels
        else:
            np.multiply(pixels, self.scales, out=target, casting="unsafe")
            target += self.offsets
        if ok is None:
            valid_i[y0 : y0 + h, x0 : x0 + w] = True
        else:
            np.copyto(target, 0.0, where=~ok)  # invalid pixels become 0 (NaN too)
            valid_i[y0 : y0 + h, x0 : x0 + w] = ok


def _mask_mode(src) -> str:
    """How to find invalid pixels: "none", "nodata" (compare values) or "mask" (GDAL mask)."""
    flags = src.mask_flag_enums
    if all(f == [MaskFlags.all_valid] for f in flags):
        return "none"
    if all(MaskFlags.nodata in f or f == [MaskFlags.all_valid] for f in flags):
        return "nodata"
    return "mask"


def _valid_pixels(src, block, window, mode, nodata, is_float) -> np.ndarray | None:
    """bool (h, w): every band has data; None when every pixel is valid."""
    ok = None
    if mode == "mask":
        ok = np.all(src.read_masks(window=window) > 0, axis=0)
    elif mode == "nodata":
        values = {v for v in nodata if v is not None}
        if len(values) == 1 and len(nodata) == len(block) and not np.isnan(next(iter(values))):
            # one nodata for every band (the usual case): one pass over the block
            ok = np.all(block != np.asarray(values.pop()).astype(block.dtype), axis=0)
        else:
            for band, value in enumerate(nodata):
                if value is None:
                    continue
                if np.isnan(value):
                    band_ok = ~np.isnan(block[band])
                else:  # in the block's dtype, as GDAL converted it (float32: direct reads)
                    band_ok = block[band] != np.asarray(value).astype(block.dtype)
                ok = band_ok if ok is None else ok & band_ok
    if is_float:  # integer rasters read as float32 are finite by construction
        finite = np.all(np.isfinite(block), axis=0)
        ok = finite if ok is None else ok & finite
    if ok is not None and ok.all():
        return None
    return ok


STATS_CHUNK = 64
"""Patches per step of :meth:`BandStats.fit` (bounds its float64 temporaries; fixed, so
the sums, and the statistics, do not depend on how the patches are stored)."""


def _split_physical(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Physical patches with NaN for nodata as (values with 0 there, validity mask)."""
    return np.nan_to_num(x, nan=0.0), np.isfinite(x).all(axis=1)


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and standard deviation of valid pixels of training patches.

    Fit on the training samples only, so that nothing of the test samples leaks
    into the normalisation.

    >>> data = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    >>> patches = Patches(data, np.ones((2, 2, 2), bool), np.zeros(2, int), np.zeros(2, int),
    ...                   np.arange(2), ("b",))
    >>> stats = BandStats.fit(patches, [0])
    >>> stats.mean.tolist(), round(float(stats.std[0]), 4)
    ([1.5], 1.118)
    """

    mean: np.ndarray
    std: np.ndarray
    band_names: tuple[str, ...]

    @classmethod
    def fit(cls, patches: Patches, index: np.ndarray | Sequence[int] | None = None) -> BandStats:
        """Statistics over the valid pixels of ``patches[index]`` (all when None)."""
        index = np.arange(len(patches)) if index is None else np.asarray(index)
        chunks = (
            (patches.data[part], patches.valid[part])
            for part in (index[s : s + STATS_CHUNK] for s in range(0, len(index), STATS_CHUNK))
        )
        return cls._from_chunks(chunks, len(patches.band_names), patches.band_names)

    @classmethod
    def fit_physical(cls, x: np.ndarray | PatchArray) -> BandStats:
        """Statistics of physical patches with NaN for nodata (an ndarray or a lazy
        :class:`PatchArray`, read :data:`STATS_CHUNK` patches at a time): the same
        numbers as :meth:`fit` on the patches they came from."""
        chunks = (
            _split_physical(batch_rows(x, np.arange(s, min(s + STATS_CHUNK, len(x)))))
            for s in range(0, len(x), STATS_CHUNK)
        )
        names = tuple(f"band{i + 1}" for i in range(x.shape[1]))
        return cls._from_chunks(chunks, x.shape[1], names)

    @classmethod
    def _from_chunks(cls, chunks, channels: int, band_names: tuple[str, ...]) -> BandStats:
        total = np.zeros(channels)
        squares = np.zeros(channels)
        count = 0
        for part_data, part_valid in chunks:  # chunks bound the float64 temporaries
            data = part_data.astype(np.float64)
            valid = part_valid[:, None, :, :]
            data *= valid
            total += data.sum(axis=(0, 2, 3))
            squares += np.square(data).sum(axis=(0, 2, 3))
            count += int(valid.sum())
        if count == 0:
            raise ValueError("no valid pixel in the training patches")
        mean = total / count
        variance = np.maximum(squares / count - mean**2, 0.0)
        std = np.sqrt(variance)
        std[std == 0] = 1.0  # a constant band: centre it, do not divide by zero
        return cls(mean.astype(np.float32), std.astype(np.float32), band_names)

    def transform(self, patches: Patches | PatchStore) -> np.ndarray:
        """float32 ``(N, C, S, S)`` normalised data; invalid pixels are 0 (the band mean).
        A :class:`PatchStore` is read whole, once: give it a small selection."""
        read = patches.read()  # a store's .data and .valid would each read the rasters
        out = (read.data - self.mean[:, None, None]) / self.std[:, None, None]
        out *= read.valid[:, None, :, :]
        return out.astype(np.float32, copy=False)

    def transform_physical(self, x: np.ndarray) -> np.ndarray:
        """:meth:`transform` of physical patches with NaN for nodata (an ndarray)."""
        data, valid = _split_physical(x)
        n = len(data)
        zeros = np.zeros(n, dtype=np.int64)
        return self.transform(Patches(data, valid, zeros, zeros, np.arange(n), self.band_names))

    def to_dict(self) -> dict:
        """Plain JSON-able form (for model files that load without executing code)."""
        return {
            "band_names": list(self.band_names),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    @classmethod
    def from_dict(cls, values: dict) -> BandStats:
        """Inverse of :meth:`to_dict`."""
        return cls(
            np.asarray(values["mean"], dtype=np.float32),
            np.asarray(values["std"], dtype=np.float32),
            tuple(values["band_names"]),
        )


# --- patches read on demand ----------------------------------------------------------------


class CacheBudget:
    """Bytes of patches that may still be kept in memory, handed out part by part.

    >>> budget = CacheBudget(1)  # MiB
    >>> budget.take(600_000), budget.take(600_000), budget.take(400_000)
    (True, False, True)
    """

    def __init__(self, mb: float) -> None:
        self.left = int(mb * 2**20)

    def take(self, nbytes: int) -> bool:
        """True (and the bytes are spent) when ``nbytes`` still fit."""
        if nbytes > self.left:
            return False
        self.left -= nbytes
        return True


@dataclass
class _Part:
    """The patches of one raster: window origins, and their pixels when cached."""

    raster: RasterInfo
    row_off: np.ndarray
    col_off: np.ndarray
    data: np.ndarray | None = None
    valid: np.ndarray | None = None

    def keep(self, rows: np.ndarray) -> _Part:
        """Only the patches at ascending positions ``rows``; cached pixels are moved down
        in place, in chunks (no second copy of the part)."""
        rows = np.asarray(rows, dtype=np.int64)
        data, valid = self.data, self.valid
        if data is not None and valid is not None and len(rows) < len(data):
            for start in range(0, len(rows), 256):  # rows[i] >= i: sources not yet overwritten
                chunk = rows[start : start + 256]
                data[start : start + len(chunk)] = data[chunk]
                valid[start : start + len(chunk)] = valid[chunk]
            data, valid = data[: len(rows)], valid[: len(rows)]
        return _Part(self.raster, self.row_off[rows], self.col_off[rows], data, valid)


def sample_patches(
    raster: RasterInfo,
    points_xy: np.ndarray,
    size_px: int,
    *,
    cache: bool,
    threads: int = 2,
) -> tuple[_Part, np.ndarray]:
    """The patches around ``points_xy`` as one part of a :class:`PatchStore`, and the
    nodata share of each.

    One pass over the windows in raster block order, 256 at a time in one reused
    buffer (:func:`iter_patches`), so memory stays bounded; with ``cache`` the pixels
    are kept too (the values :func:`extract_patches` reads, and a mask), in
    :func:`cache_dtype`: 16-bit imagery is kept in 16 bits, half of float32.
    """
    row_off, col_off = _origins(raster, points_xy, size_px)
    n, bands = len(row_off), raster.count
    share = np.zeros(n)
    data = np.zeros((n, bands, size_px, size_px), cache_dtype(raster)) if cache else None
    valid = np.zeros((n, size_px, size_px), bool) if cache else None
    batches = iter_patches(raster, points_xy, size_px, threads=threads, reuse=True)
    for batch in batches:
        share[batch.index] = batch.nodata_share
        if data is not None and valid is not None:
            data[batch.index], valid[batch.index] = batch.data, batch.valid
    return _Part(raster, row_off, col_off, data, valid), share


def cache_dtype(raster: RasterInfo) -> np.dtype:
    """How cached patch pixels are stored: the raster's own integer type up to 16 bits
    when its bands carry no scale or offset (the values patches hold are then the raw
    integers, and they and the 0 outside the raster convert back to float32 exactly),
    else float32 (a scaled band's values, e.g. reflectance = 0.0001 x DN, are not
    integers). Unscaled uint16 imagery: a cache half the size.

    The bytes per cached patch are :func:`cache_bytes`.
    """
    dtype = np.dtype(raster.dtype)
    unscaled = all(s == 1 for s in raster.scales) and all(o == 0 for o in raster.offsets)
    small_int = dtype.kind in "iu" and dtype.itemsize <= 2
    return dtype if small_int and unscaled else np.dtype(np.float32)


def cache_bytes(raster: RasterInfo, size_px: int) -> int:
    """Bytes of one cached patch of ``raster``: its pixels and its valid mask."""
    return (raster.count * cache_dtype(raster).itemsize + 1) * size_px**2


class PatchStore:
    """Patches of many samples, possibly from several rasters, read on demand.

    It stands where :class:`Patches` stands for a region or a pooled scope
    (``row_off``, ``col_off``, ``band_names``, ``size_px``, ``nodata_share``,
    :meth:`subset`, and ``data`` / ``valid`` for small selections), but pixels are
    only read when asked for: from a cache when the part was small enough to keep
    (``compute.patch_cache_mb``, 2 GiB by default: the 20,000 samples of a 30 m scene,
    43 px and 7 bands, take 1.0 GiB; 100,000 samples of 128 px and 6 bands would take
    39 GB), else from the raster through a :class:`PatchReader`
    that stays open. :meth:`subset` and :meth:`concat` copy no pixels, so memory does
    not grow with the number of samples (issue 16): a selection is read, used and
    dropped batch by batch (:meth:`physical` gives the lazy array the models take).
    Reading the same windows gives the same values, so results do not depend on
    whether a part is cached.
    """

    def __init__(
        self,
        parts: list[_Part],
        band_names: tuple[str, ...],
        size_px: int,
        nodata_share: np.ndarray,
        rows: np.ndarray | None = None,
        *,
        threads: int = 2,
    ) -> None:
        self._parts = parts
        self.band_names = tuple(band_names)
        self._size_px = int(size_px)
        self._share = np.asarray(nodata_share, dtype=np.float64)
        total = sum(len(p.row_off) for p in parts)
        self._rows = np.arange(total) if rows is None else np.asarray(rows, dtype=np.int64)
        self._starts = np.cumsum([0, *(len(p.row_off) for p in parts)])
        self._row_all = np.concatenate([p.row_off for p in parts]).astype(np.int64)
        self._col_all = np.concatenate([p.col_off for p in parts]).astype(np.int64)
        self._threads = threads
        self._readers: dict[int, PatchReader] = {}

    # -- what Patches has --
    def __len__(self) -> int:
        return len(self._rows)

    @property
    def size_px(self) -> int:
        """Side of each patch in pixels."""
        return self._size_px

    @property
    def row_off(self) -> np.ndarray:
        """Window origin rows in each patch's raster grid."""
        return self._row_all[self._rows]

    @property
    def col_off(self) -> np.ndarray:
        """Window origin columns in each patch's raster grid."""
        return self._col_all[self._rows]

    @property
    def index(self) -> np.ndarray:
        """Positions 0..N-1 (the store's own order)."""
        return np.arange(len(self))

    @property
    def nodata_share(self) -> np.ndarray:
        """Share of each patch's pixels without data (known without reading again)."""
        return self._share[self._rows]

    @property
    def cached(self) -> bool:
        """True when every pixel is held in memory."""
        return all(p.data is not None for p in self._parts)

    def drop_cache(self) -> None:
        """Forget the cached pixels of every part of this store (and of every view that
        shares them): reads stream from the rasters from now on, with the same values.

        The pipeline calls it once the models are trained: explanation and maps read a
        few patches or none, and the 20,000 patches of a 30 m scene (0.45 GB) need not
        stay for them.
        """
        for part in self._parts:
            part.data = part.valid = None

    @property
    def nbytes(self) -> int:
        """Bytes of the patches as float32 values and a validity mask (what caching costs)."""
        return len(self) * (len(self.band_names) * 4 + 1) * self._size_px**2

    def subset(self, index: np.ndarray | Sequence[int]) -> PatchStore:
        """The patches at positions ``index``: a view, no pixel is read or copied."""
        return PatchStore(
            self._parts,
            self.band_names,
            self._size_px,
            self._share,
            self._rows[np.asarray(index, dtype=np.int64)],
            threads=self._threads,
        )

    @staticmethod
    def concat(stores: Sequence[PatchStore]) -> PatchStore:
        """Several stores one after the other (regions of a pooled scope): no copy."""
        parts: list[_Part] = []
        rows, shares, start = [], [], 0
        for store in stores:
            rows.append(store._rows + start)
            parts.extend(store._parts)
            shares.append(store._share)
            start += int(store._starts[-1])
        first = stores[0]
        return PatchStore(
            parts,
            first.band_names,
            first.size_px,
            np.concatenate(shares),
            np.concatenate(rows),
            threads=first._threads,
        )

    @property
    def data(self) -> np.ndarray:
        """float32 ``(N, C, S, S)`` of every patch of this view, read now (as Patches.data)."""
        return self.read().data

    @property
    def valid(self) -> np.ndarray:
        """bool ``(N, S, S)`` of every patch of this view, read now (as Patches.valid)."""
        return self.read().valid

    def read(self, index: np.ndarray | slice | None = None) -> Patches:
        """The pixels of the patches at ``index`` of this view (all when None)."""
        rows = self._rows if index is None else self._rows[index]
        n, size = len(rows), self._size_px
        data = np.empty((n, len(self.band_names), size, size), dtype=np.float32)
        valid = np.empty((n, size, size), dtype=bool)
        part_of = np.searchsorted(self._starts, rows, side="right") - 1
        for k in np.unique(part_of):
            at = np.flatnonzero(part_of == k)
            local = rows[at] - self._starts[k]
            part = self._parts[k]
            if part.data is not None and part.valid is not None:
                data[at], valid[at] = part.data[local], part.valid[local]
            else:
                got = self._reader(int(k)).read(part.row_off[local], part.col_off[local])
                data[at], valid[at] = got.data, got.valid
        return Patches(
            data, valid, self._row_all[rows], self._col_all[rows], np.arange(n), self.band_names
        )

    def physical(self) -> PatchArray:
        """The lazy ``(N, C, S, S)`` array of physical values, NaN where there is no data."""
        return PatchArray(self)

    def _reader(self, k: int) -> PatchReader:
        reader = self._readers.get(k)
        if reader is None:
            part = self._parts[k]
            reader = self._readers[k] = PatchReader(
                part.raster, self._size_px, threads=self._threads
            )
            reader.split_columns(part.col_off)
        return reader

    def close(self) -> None:
        """Close the open rasters (they reopen when read again)."""
        for reader in self._readers.values():
            reader.close()
        self._readers = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_readers"] = {}  # open datasets do not travel; a copy opens its own
        return state


def physical_values(patches: Patches) -> np.ndarray:
    """Patch values in physical units with NaN where there is no data (a new array)."""
    data = patches.data.copy()
    data[np.broadcast_to(~patches.valid[:, None], data.shape)] = np.nan
    return data


class PatchArray:
    """A lazy ``(N, C, S, S)`` float32 array: a :class:`PatchStore`'s physical values
    (NaN where there is no data), optionally passed through functions, read on demand.

    Indexing with an integer array, a boolean mask or a slice gives another lazy
    array (nothing is read); ``np.asarray`` reads the pixels. Models take it where
    they take an ndarray and read it batch by batch (:func:`batch_rows`), so training
    on 100,000 samples holds one batch of pixels, not 100,000 patches.

    >>> data = np.arange(16, dtype=np.float32).reshape(4, 1, 2, 2)
    >>> valid = np.ones((4, 2, 2), bool)
    >>> valid[0, 0, 0] = False
    >>> store = PatchStore([_Part(None, np.zeros(4, int), np.zeros(4, int), data, valid)],
    ...                    ("b",), 2, np.zeros(4))
    >>> lazy = store.physical()[np.array([0, 2])]
    >>> lazy.shape, np.asarray(lazy)[:, 0, 0, 0].tolist()
    ((2, 1, 2, 2), [nan, 8.0])
    >>> np.asarray(lazy.map(np.nan_to_num))[0, 0, 0, 0]
    np.float32(0.0)
    """

    ndim = 4
    dtype = np.dtype(np.float32)

    def __init__(
        self,
        store: PatchStore,
        fns: tuple[Callable[[np.ndarray], np.ndarray], ...] = (),
    ) -> None:
        self.store = store
        self.fns = fns

    @property
    def shape(self) -> tuple[int, int, int, int]:
        s = self.store.size_px
        return (len(self.store), len(self.store.band_names), s, s)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: np.ndarray | slice | Sequence[int]) -> PatchArray:
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        if index.ndim != 1:
            raise IndexError("a PatchArray is indexed by one array of positions, or a slice")
        return PatchArray(self.store.subset(index), self.fns)

    def map(self, fn: Callable[[np.ndarray], np.ndarray]) -> PatchArray:
        """The same patches passed through ``fn`` (an array function applied per read)."""
        return PatchArray(self.store, (*self.fns, fn))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = physical_values(self.store.read())
        for fn in self.fns:
            out = fn(out)
        return out if dtype is None else out.astype(dtype, copy=False)


def batch_rows(x: np.ndarray | PatchArray, index: np.ndarray) -> np.ndarray:
    """``x[index]`` as an ndarray: read now for a lazy :class:`PatchArray`."""
    return np.asarray(x[np.asarray(index)])


PatchesLike = np.ndarray | PatchArray
"""Patches ``(N, C, S, S)`` as models take them: in memory, or read on demand."""
