"""Occlusion sensitivity of many samples, in batches that can run on a Dask cluster.

A region's sensitivity raster needs one occlusion map per sample patch; the patches are
independent, so batches of them are tasks (:mod:`soilsource.runtime`). The model goes to
the tasks as plain weights, the batches as normalised arrays; results come back in batch
order, so the maps are the same arrays whether they were computed here or on workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from soilsource.data.patches import BandStats, Patches, PatchStore
from soilsource.explain.occlusion import occlusion_sensitivity
from soilsource.models.modelio import ModelState, model_state
from soilsource.progress import track
from soilsource.runtime import Session, session_or_local

__all__ = [
    "Background",
    "occlusion_px",
    "sensitivity_maps",
    "sensitivity_task",
    "typical_pixels",
]

Background = tuple[tuple[float, tuple[float, ...]], ...]
"""Pixels that occluded windows take in turn, each with its weight: ``((w, (v_1 .. v_C)),
...)`` in normalised units; the maps are the weighted mean of one occlusion per pixel."""


def occlusion_px(window_m: float, stride_m: float, pixel_m: float) -> tuple[int, int]:
    """Occluding window and stride in whole pixels of the imagery (at least 1 each).

    The stride is capped at the window, so every pixel is covered.

    >>> occlusion_px(160.0, 40.0, 10.0), occlusion_px(160.0, 400.0, 30.0)
    ((16, 4), (5, 5))
    """
    window_px = max(1, round(window_m / pixel_m))
    stride_px = min(window_px, max(1, round(stride_m / pixel_m)))
    return window_px, stride_px


@dataclass(frozen=True)
class _OcclusionJob:
    model: ModelState
    window_px: int
    stride_px: int
    baseline: float
    output: Literal["probability", "raw"] = "probability"
    held: tuple[int, ...] = ()
    background: Background = ()


def occlusion_baseline(
    x: torch.Tensor,
    baseline: float | Sequence[float],
    held: tuple[int, ...],
    valid: np.ndarray | torch.Tensor | None = None,
) -> float | torch.Tensor:
    """What occluded pixels become: ``baseline`` (one value, or one per channel) in every
    channel but the ``held`` ones, which keep their own values (a window then hides nothing
    of them), and nothing at all where ``valid`` ``(N, H, W)`` is False.

    A pixel without data (outside the imagery, under an alpha mask, nodata) is already the
    band mean the network was trained to read as "unknown"; a window that turned it into a
    typical pixel would measure what the network makes of land that nobody saw (17 % of the
    Meuse patches' pixels are outside the scene or under its water mask). So a window changes
    only the pixels that were seen; with the band mean as the baseline this changes nothing
    (those pixels are 0 already). On the benchmarks it moved little (docs/method.md).
    """
    unseen = None
    if valid is not None:
        unseen = ~torch.as_tensor(valid, dtype=torch.bool, device=x.device)
        if not unseen.any():
            unseen = None
    if not held and unseen is None and isinstance(baseline, float | int):
        return float(baseline)
    value = torch.as_tensor(baseline, dtype=x.dtype).reshape(-1, 1, 1)
    base = torch.empty_like(x)
    base[:] = value
    if held:
        base[:, list(held)] = x[:, list(held)]
    if unseen is not None:
        base = torch.where(unseen[:, None], x, base)
    return base


def sensitivity_task(job: _OcclusionJob, batch: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Occlusion maps ``(n, S, S)`` float32 of one batch of normalised patches and their
    validity masks: one occlusion with ``job.baseline``, or the weighted mean over
    ``job.background``; pixels without data are never changed (:func:`occlusion_baseline`)."""
    network = job.model.build()
    normalised, valid = batch
    x = torch.from_numpy(normalised)
    seen = torch.as_tensor(valid, dtype=torch.bool)  # once for every typical pixel
    pixels = job.background or ((1.0, job.baseline),)
    maps = None
    for weight, pixel in pixels:
        base = occlusion_baseline(x, pixel, job.held, seen)
        one = occlusion_sensitivity(
            network, x, job.window_px, job.stride_px, base, output=job.output
        )
        maps = weight * one if maps is None else maps + weight * one
    assert maps is not None
    return maps.cpu().numpy().astype(np.float32, copy=False)


def typical_pixels(
    normalised: np.ndarray, valid: np.ndarray, k: int, *, seed: int = 0, max_pixels: int = 50_000
) -> Background:
    """``k`` typical pixels of normalised patches and their shares: the centres of k-means
    clusters of the valid pixels (at most ``max_pixels`` of them, drawn at random).

    Occluding with the band mean hides nothing where a place already looks like the mean
    (an ordinary field among fields), and hides a lot where it looks unusual (water, bright
    roofs), whatever the network learned about either: the drop is bounded by how far the
    pixels are from the baseline. Averaging the drop over the region's typical pixels,
    weighted by how common each is, asks instead what the prediction would be if the place
    looked like the rest of the region (the expectation over a background distribution, as
    in Lundberg & Lee 2017, SHAP, with a k-means summary of the background as in their
    KernelExplainer). Every term is still one exact occlusion with a per-channel baseline.

    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(-2, 0.1, (1, 2, 4, 8)), rng.normal(2, 0.1, (1, 2, 4, 8))], 3)
    >>> pixels = typical_pixels(x.astype(np.float32), np.ones((1, 4, 16), bool), 2)
    >>> sorted(round(w, 2) for w, _ in pixels), sorted(round(v[0]) for _, v in pixels)
    ([0.5, 0.5], [-2, 2])
    """
    from sklearn.cluster import KMeans

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    pixels = np.moveaxis(np.asarray(normalised), 1, -1)[np.asarray(valid, bool)]
    pixels = pixels[np.isfinite(pixels).all(axis=1)]
    if len(pixels) > max_pixels:
        pixels = pixels[np.random.default_rng(seed).choice(len(pixels), max_pixels, False)]
    k = min(k, len(np.unique(pixels, axis=0)))
    if k < 1:
        return ()
    km = KMeans(k, n_init=4, random_state=seed).fit(pixels.astype(np.float64))
    shares = np.bincount(km.labels_, minlength=k) / len(pixels)
    return tuple(
        (float(w), tuple(float(v) for v in centre))
        for w, centre in zip(shares, km.cluster_centers_, strict=True)
        if w > 0
    )


def sensitivity_maps(
    network: torch.nn.Module,
    stats: BandStats,
    patches: Patches | PatchStore,
    window_px: int,
    stride_px: int,
    baseline: float = 0.0,
    *,
    batch: int = 16,
    session: Session | None = None,
    progress: bool = True,
    output: Literal["probability", "raw"] = "probability",
    held: tuple[int, ...] = (),
    background: Background = (),
) -> np.ndarray:
    """Occlusion sensitivity ``(N, S, S)`` of every patch under a trained network.

    Parameters
    ----------
    network:
        The trained torch network (SI-LICNet gets exact incremental occlusion).
    stats:
        The band statistics the network was trained with; patches are normalised with
        them, so pixels without data are 0, the band mean, as in training.
    patches:
        The sample patches, in physical units (in memory, or a store read batch by batch).
    window_px, stride_px:
        The occluding window and its step (:func:`occlusion_px` converts metres).
    baseline:
        Value of occluded pixels in standardised units (0 = the band mean). Pixels without
        data keep theirs (:func:`occlusion_baseline`).
    batch:
        Patches per task.
    session:
        Where the batches run; None opens a local session for this call.
    output:
        What a drop measures: ``"probability"`` or the model's ``"raw"`` output
        (:func:`soilsource.explain.occlusion.occlusion_sensitivity`).
    held:
        Channels a window leaves as they are (:func:`occlusion_baseline`): the context
        bands, which describe a place's surroundings rather than the place itself.
    background:
        Pixels the windows take in turn, with weights (:func:`typical_pixels`); the maps
        are the weighted mean of the occlusions. Empty: one occlusion with ``baseline``.

    Examples
    --------
    >>> from soilsource.models import SILICNet
    >>> data = np.random.default_rng(0).normal(size=(3, 2, 16, 16)).astype(np.float32)
    >>> patches = Patches(data, np.ones((3, 16, 16), bool), np.zeros(3, int),
    ...                   np.zeros(3, int), np.arange(3), ("a", "b"))
    >>> stats = BandStats.fit(patches)
    >>> maps = sensitivity_maps(SILICNet(2, 16).eval(), stats, patches, 4, 2, batch=2,
    ...                         progress=False)
    >>> maps.shape, maps.dtype
    ((3, 16, 16), dtype('float32'))
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    job = _OcclusionJob(
        model_state(network),
        window_px,
        stride_px,
        float(baseline),
        output,
        tuple(held),
        tuple(background),
    )
    starts = range(0, len(patches), batch)

    def batches():
        for start in starts:
            part = patches.subset(np.arange(start, min(start + batch, len(patches)))).read()
            yield stats.transform(part), part.valid

    maps = np.empty((len(patches), patches.size_px, patches.size_px), dtype=np.float32)
    with session_or_local(session) as runner:
        results = runner.map(sensitivity_task, batches(), shared=job)
        if progress:
            results = track(results, "occlusion", total=len(starts))
        for start, part in zip(starts, results, strict=True):
            maps[start : start + len(part)] = part
    return maps
