"""Smooth random fields and distance rasters shared by the generators.

Real landscapes are spatially autocorrelated: terrain, geology, pH and the
brightness of a roof vary smoothly, not pixel by pixel. Gaussian-filtered white
noise gives such fields; filtering a coarse grid and interpolating keeps the cost
independent of the correlation length.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Standardised (mean 0, sd 1) Gaussian random field with correlation ~``scale_px``.

    Parameters
    ----------
    rng:
        Source of randomness (the field is a deterministic function of its state).
    shape:
        Rows, columns of the output.
    scale_px:
        Standard deviation of the Gaussian smoothing kernel, in pixels. Below 0.3
        the field is white noise.

    Examples
    --------
    >>> field = smooth_noise(np.random.default_rng(0), (64, 80), 6.0)
    >>> field.shape, round(float(field.mean()), 6), round(float(field.std()), 6)
    ((64, 80), 0.0, 1.0)
    """
    rows, cols = shape
    if scale_px < 0.3:
        field = rng.standard_normal(shape, dtype=np.float32)
    else:
        # Filter on a grid coarse enough that the kernel is ~4 cells, then zoom back.
        factor = max(1, int(scale_px // 4))
        coarse = (rows // factor + 3, cols // factor + 3)
        noise = rng.standard_normal(coarse, dtype=np.float32)
        smooth = ndimage.gaussian_filter(noise, scale_px / factor, mode="wrap")
        if factor > 1:  # bilinear upsampling, one axis at a time
            smooth = _upsample_rows(smooth, factor, rows, margin=1)
            smooth = _upsample_rows(smooth.T, factor, cols, margin=1).T
        field = smooth[:rows, :cols]
    field = field - field.mean(dtype=np.float64)
    sd = field.std(dtype=np.float64)
    return (field / sd if sd > 0 else field).astype(np.float32)


def upsample_linear(coarse: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear interpolation of a grid of ``factor`` x ``factor`` cells onto the fine grid.

    Coarse cell (i, j) covers fine pixels [i f, (i + 1) f) x [j f, (j + 1) f); values
    are placed at cell centres and held constant beyond the outermost centres.

    >>> upsample_linear(np.array([[0.0, 4.0]]), 2, (2, 4)).tolist()
    [[0.0, 1.0, 3.0, 4.0], [0.0, 1.0, 3.0, 4.0]]
    """
    if coarse.shape[0] == 1:
        coarse = np.repeat(coarse, 2, axis=0)
    if coarse.shape[1] == 1:
        coarse = np.repeat(coarse, 2, axis=1)
    out = _upsample_rows(coarse.astype(np.float32), factor, shape[0], margin=0)
    return _upsample_rows(out.T, factor, shape[1], margin=0).T.copy()


def _upsample_rows(coarse: np.ndarray, factor: int, n: int, margin: int) -> np.ndarray:
    """Linear interpolation of ``coarse`` rows onto ``n`` rows ``factor`` times finer."""
    pos = (np.arange(n) + 0.5) / factor - 0.5 + margin  # the first ``margin`` rows pad
    lo = np.clip(np.floor(pos).astype(int), 0, coarse.shape[0] - 2)
    w = np.clip(pos - lo, 0.0, 1.0).astype(np.float32)[:, None]
    return (1.0 - w) * coarse[lo] + w * coarse[lo + 1]


def distance_m(mask: np.ndarray, pixel_m: float) -> np.ndarray:
    """Distance (m) from every pixel to the nearest ``True`` pixel of ``mask``.

    Where ``mask`` is empty everywhere the distance is infinite.

    >>> m = np.zeros((1, 5), bool); m[0, 0] = True
    >>> distance_m(m, 10.0).tolist()
    [[0.0, 10.0, 20.0, 30.0, 40.0]]
    """
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    return (ndimage.distance_transform_edt(~mask) * pixel_m).astype(np.float32)


def nearest_index(mask: np.ndarray, pixel_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance (m) to, and row/column index of, the nearest ``True`` pixel of ``mask``.

    ``mask`` must have at least one ``True`` pixel.
    """
    dist, (ri, ci) = ndimage.distance_transform_edt(~mask, return_indices=True)
    return (dist * pixel_m).astype(np.float32), ri, ci


def rescale01(values: np.ndarray) -> np.ndarray:
    """Linear rescale to [0, 1] (a constant array gives zeros).

    >>> rescale01(np.array([2.0, 4.0, 3.0])).tolist()
    [0.0, 1.0, 0.5]
    """
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi <= lo:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - lo) / (hi - lo)).astype(np.float32)
