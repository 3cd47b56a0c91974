"""Self-supervised pretraining of SI-LICNet's trunk on a region's own unlabelled imagery.

A region has a few hundred labelled samples and millions of unlabelled pixels. Before the
supervised fit, the trunk (stem and blocks, with their BatchNorm statistics) can learn from
the imagery alone what tells places apart, in the manner of Tile2Vec (Jean et al., AAAI
2019, "Tile2Vec: unsupervised representation learning for spatially distributed data"):
by the distributional hypothesis of geography, a patch should look more like a patch a
few hundred metres away (its *neighbour*) than like a patch anywhere else in the region
(a *distant* one). The embedding is the network's own pooled features (rings, or rings and
quadrants: :meth:`soilsource.models.SILICNet.pooled`), L2-normalised, and the loss is the
triplet margin loss ``max(0, |a - n|^2 - |a - d|^2 + margin)``; with ``members > 1`` each
member's slice of the features is its own embedding with its own loss, so the members stay
independent networks. Normalising the embeddings replaces Tile2Vec's penalty on their norm
(without either, the loss is lowered by scaling the features up).

The pretrained trunk only initialises every fold's network and the final one; the head
starts at random and everything is trained on the labels as before. The imagery is read
without labels, so pretraining on all of a region's imagery (test samples' surroundings
included) leaks no label into cross-validation.

Cost and reuse: ``steps`` optimiser steps on ``batch`` triplets cost about ``3 * steps *
batch / (min_steps * 32)`` of one supervised fit (the defaults: 1.5 fits), once per
region. The trunk is cached under :func:`cache_dir` by a fingerprint of the imagery (file
sizes and sampled contents), the patch size, the architecture and these settings, so a
rerun or ``--resume`` on the same imagery reuses it. Whether it pays is measured in
``docs/benchmarks.md`` (``bench_accuracy``, variants ``pretrain``).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from soilsource.atomic import atomic_path
from soilsource.data.dataset import concat_patches
from soilsource.data.patches import BandStats, PatchReader
from soilsource.inputs.imagery import RasterInfo, raster_fingerprint
from soilsource.learn.training import (
    _compute_context,
    augment,
    derive_seed,
    resolve_device,
)
from soilsource.models.silicnet import SILICNet
from soilsource.runtime import cache_dir

__all__ = [
    "PretrainSettings",
    "cache_dir",
    "fingerprint",
    "load_trunk",
    "pretrain_trunk",
    "pretrained_trunk",
    "trunk_state",
    "unlabelled_pairs",
]

FORMAT = 1
"""Version of the cached trunk files (a change invalidates every cache entry)."""

TRUNK_PREFIXES = ("stem.", "blocks.")
"""State-dict keys of the trunk: what pretraining learns and hands on."""

MIN_VALID_SHARE = 0.9
"""Unlabelled patches with fewer valid pixels than this are drawn again."""


@dataclass(frozen=True)
class PretrainSettings:
    """How much imagery pretraining reads and how long it trains.

    ``anchors`` random patches and as many neighbours (each shifted by up to
    ``neighbour_share`` of the patch side in each direction) are read once; each step
    draws ``batch`` triplets (anchor, its neighbour, another anchor). ``augment`` applies
    the supervised training's rotations and flips to each patch of a triplet on its own.
    """

    steps: int = 150
    batch: int = 32
    anchors: int = 512
    neighbour_share: float = 0.5
    margin: float = 0.5
    lr: float = 3e-3
    weight_decay: float = 1e-2
    augment: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 2 or self.anchors < 2:
            raise ValueError("steps must be >= 1, batch and anchors >= 2")
        if not 0.0 < self.neighbour_share <= 1.0:
            raise ValueError(f"neighbour_share must be in (0, 1], got {self.neighbour_share}")


def fingerprint(
    rasters: Sequence[RasterInfo], architecture: dict, settings: PretrainSettings, seed: int
) -> str:
    """A hex digest naming one pretraining: the imagery, the network (its ``config``, patch
    size included), the settings and the seed.

    The imagery enters by :func:`~soilsource.inputs.imagery.raster_fingerprint`: its grid,
    bands and sampled file contents.
    """
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {
                "format": FORMAT,
                "seed": seed,
                "architecture": architecture,
                "settings": asdict(settings),
            },
            sort_keys=True,
        ).encode()
    )
    for raster in rasters:
        digest.update(raster_fingerprint(raster).encode())
    return digest.hexdigest()[:32]


def unlabelled_pairs(
    rasters: Sequence[RasterInfo], patch_px: int, n: int, neighbour_px: int, seed: int
):
    """``n`` random anchor patches and a neighbour of each, from ``rasters`` (no labels).

    Anchors are spread over the rasters by their area; windows lie wholly inside the
    raster, and a pair with less than :data:`MIN_VALID_SHARE` valid pixels in either patch
    is drawn again (up to a few rounds; fewer pairs come back from imagery that is mostly
    nodata). Returns two :class:`~soilsource.data.patches.Patches` in physical units.
    """
    rng = np.random.default_rng(derive_seed(seed, 7))
    fits = [r for r in rasters if r.width >= patch_px and r.height >= patch_px]
    if not fits:
        raise ValueError(f"no raster is at least {patch_px} px on a side")
    areas = np.array([r.width * r.height for r in fits], dtype=float)
    anchors, neighbours = [], []
    for k, raster in enumerate(fits):
        want = round(n * areas[k] / areas.sum())
        got = 0
        with PatchReader(raster, patch_px, threads=1) as reader:
            for _ in range(5):
                if got >= want:
                    break
                m = 2 * (want - got)
                rows = rng.integers(0, raster.height - patch_px + 1, m)
                cols = rng.integers(0, raster.width - patch_px + 1, m)
                shift = rng.integers(-neighbour_px, neighbour_px + 1, (2, m))
                n_rows = np.clip(rows + shift[0], 0, raster.height - patch_px)
                n_cols = np.clip(cols + shift[1], 0, raster.width - patch_px)
                a, b = reader.read(rows, cols), reader.read(n_rows, n_cols)
                most = 1.0 - MIN_VALID_SHARE  # the largest nodata share kept
                ok = (a.nodata_share <= most) & (b.nodata_share <= most)
                keep = np.flatnonzero(ok)[: want - got]
                anchors.append(a.subset(keep))
                neighbours.append(b.subset(keep))
                got += len(keep)
    return concat_patches(anchors), concat_patches(neighbours)


def trunk_state(model: SILICNet) -> dict[str, torch.Tensor]:
    """The trunk's weights and BatchNorm statistics (copies, on the CPU)."""
    return {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if k.startswith(TRUNK_PREFIXES)
    }


def load_trunk(model: SILICNet, state: dict[str, torch.Tensor]) -> SILICNet:
    """Copy a pretrained trunk into ``model`` (same architecture); the head is untouched."""
    own = model.state_dict()
    wanted = {k for k in own if k.startswith(TRUNK_PREFIXES)}
    if set(state) != wanted or any(own[k].shape != v.shape for k, v in state.items()):
        raise ValueError("the pretrained trunk does not fit this network's architecture")
    model.load_state_dict(state, strict=False)
    return model


def pretrain_trunk(
    model: SILICNet,
    anchors: np.ndarray,
    neighbours: np.ndarray,
    settings: PretrainSettings | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    num_threads: int | None = None,
) -> list[float]:
    """Train ``model``'s trunk in place on triplets; returns the loss of each step.

    ``anchors`` and ``neighbours``: normalised patches ``(N, C, S, S)``, pair ``i`` a few
    hundred metres apart. The distant patch of a triplet is another anchor.
    """
    settings = settings or PretrainSettings()
    device = resolve_device(device)
    a_all = torch.as_tensor(anchors, dtype=torch.float32)
    n_all = torch.as_tensor(neighbours, dtype=torch.float32)
    if a_all.shape != n_all.shape or len(a_all) < 2:
        raise ValueError("anchors and neighbours must be two equal stacks of >= 2 patches")
    members = model.members
    losses = []
    with _compute_context(device, num_threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, 8))
        generator = torch.Generator().manual_seed(derive_seed(seed, 9))
        model.to(device).train()
        params = [p for name, p in model.named_parameters() if name.startswith(TRUNK_PREFIXES)]
        optimiser = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, settings.steps)
        size = min(settings.batch, len(a_all))
        for _ in range(settings.steps):
            idx = torch.randperm(len(a_all), generator=generator)[:size]
            other = (idx + torch.randint(1, len(a_all), (size,), generator=generator)) % len(a_all)
            batch = torch.cat([a_all[idx], n_all[idx], a_all[other]])
            if settings.augment:
                batch = augment(batch, generator)
            emb = model.pooled(batch.to(device))  # (3B, members * width * elements)
            emb = F.normalize(emb.view(3 * size, members, -1), dim=-1)
            a, n, d = emb.split(size)
            close = (a - n).pow(2).sum(-1)
            far = (a - d).pow(2).sum(-1)
            loss = F.relu(close - far + settings.margin).mean(0).sum()  # each member its own
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()) / members)
    model.eval()
    return losses


def pretrained_trunk(
    rasters: Sequence[RasterInfo],
    build,
    settings: PretrainSettings | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    cache: Path | None = None,
    log=None,
) -> dict[str, torch.Tensor]:
    """The trunk of ``build()`` pretrained on ``rasters``, from the cache when it is there.

    ``build``: a zero-argument factory of the (untrained) SILICNet to pretrain. The result
    is written to the cache atomically (a torch file of plain tensors, read back with
    ``weights_only=True``: no code runs when it loads).
    """
    settings = settings or PretrainSettings()
    with torch.random.fork_rng(devices=[]):  # seeded initial weights; the caller's RNG kept
        torch.manual_seed(derive_seed(seed, 10))
        model = build()
    key = fingerprint(rasters, model.config, settings, seed)
    path = (cache or cache_dir()) / f"trunk-{key}.pt"
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise ValueError("not a state dict")
            load_trunk(model, state)
            if log:
                log(f"pretrained trunk reused from {path}")
            return state
        except (pickle.UnpicklingError, ValueError, RuntimeError, OSError, EOFError):
            pass  # a damaged or foreign entry: pretrain again and replace it
    neighbour_px = max(1, round(settings.neighbour_share * model.patch_px))
    a, n = unlabelled_pairs(rasters, model.patch_px, settings.anchors, neighbour_px, seed)
    if len(a) < 2:
        raise ValueError("too little valid imagery to pretrain on (fewer than 2 patches)")
    stats = BandStats.fit(a)
    losses = pretrain_trunk(
        model, stats.transform(a), stats.transform(n), settings, seed=seed, device=device
    )
    state = trunk_state(model)
    if log:
        head, tail = np.mean(losses[:10]), np.mean(losses[-10:])
        log(f"pretrained the trunk on {len(a)} unlabelled pairs: loss {head:.3f} -> {tail:.3f}")
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except OSError:
        pass  # a read-only cache costs the next run a pretraining, nothing else
    return state
