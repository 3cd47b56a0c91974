"""Training cost per region, and an accuracy smoke check, for SI-LICNet and the baselines.

Cost (issue 4, item 6): parameters, seconds per training epoch on one region of 250
samples (200 fit + 50 validation patches of 6 x 128 x 128, batch 32, augmentation on),
inference patches per second, and the cost of one region's cross-validation (5 folds +
the final model = 6 fits) at the epochs early stopping ran in the accuracy check (or at
``max_epochs`` when the model was not in it, an upper bound). The random forest's row is
its fit (window statistics + 300 trees) and predict time on the same patches. The demo
column is 6 regions x that, on one process.

Accuracy smoke check: a synthetic region (a 6-band raster of smooth random fields with
14 "industrial" sources, a spectral signature bright in SWIR; a sample is contaminated
when the summed influence of the sources, decaying with distance, plus noise is in the
top 40 %), 250 samples, 10 m pixels, spatial 5-fold CV with blocks of one patch side.
The oracle AUC is that of the true influence without the noise.

Usage: ``python benchmarks/bench_training.py [--quick] [--threads N] [--patch-px 128]
[--models a,b] [--cv-models a,b] [--seeds N] [--settings JSON]``; ``--settings`` overrides
training defaults, e.g. ``'{"monitor": "auc"}'``, to compare them on the same folds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

# soilsource before torch: it sets OMP_WAIT_POLICY, which torch reads when it loads
from soilsource.learn.evaluation import cross_validate
from soilsource.learn.training import TrainSettings, available_cpus, fit, predict_proba
from soilsource.models import SILICNet
from soilsource.models.baselines import WindowStatsForest, mobilenet_v3_small, resnet18

if TYPE_CHECKING:
    from torch import nn

BANDS, PIXEL_M = 6, 10.0


def silicnet(in_channels: int, patch_px: int) -> nn.Module:
    return SILICNet(in_channels, patch_px=patch_px)


TORCH_MODELS: dict[str, Callable[[int, int], nn.Module]] = {
    "silicnet": silicnet,
    "mobilenet_v3_small": mobilenet_v3_small,
    "resnet18": resnet18,
}


def synthetic_region(
    n: int = 250, patch_px: int = 128, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Patches (n, 6, patch_px, patch_px), labels, sample xy in metres, true influence.

    The region is 6 patches wide; lengths scale with the patch, so the task is the same
    at any ``patch_px``.
    """
    rng = np.random.default_rng(seed)
    size_px, scale = 6 * patch_px, patch_px / 128
    raster = np.stack(
        [gaussian_filter(rng.normal(size=(size_px, size_px)), 6 * scale) * 8 for _ in range(BANDS)]
    ).astype(np.float32)
    raster += rng.normal(scale=0.3, size=raster.shape).astype(np.float32)
    sources = rng.uniform(0, size_px, size=(14, 2))
    signature = np.array([0.2, 0.4, 0.6, -0.8, 1.5, 1.5], dtype=np.float32)
    for r, c in sources.astype(int):
        h, w = (rng.integers(5, 12, size=2) * scale).astype(int) + 1
        raster[:, max(r - h, 0) : r + h, max(c - w, 0) : c + w] += signature[:, None, None] * 2
    mean = raster.mean(axis=(1, 2), keepdims=True)
    raster = (raster - mean) / raster.std(axis=(1, 2), keepdims=True)
    half = patch_px // 2
    rc = rng.uniform(half, size_px - half, size=(n, 2)).astype(int)
    dist = np.linalg.norm(rc[:, None, :] - sources[None, :, :], axis=-1)
    influence = np.exp(-dist / (25.0 * scale)).sum(axis=1)
    score = np.log(influence + 0.05) + rng.normal(scale=0.6, size=n)
    labels = (score > np.quantile(score, 0.6)).astype(int)
    patches = np.stack([raster[:, r - half : r + half, c - half : c + half] for r, c in rc])
    xy = rc[:, ::-1] * PIXEL_M
    return patches.astype(np.float32), labels, xy.astype(float), influence


def torch_cost(name: str, patches, labels, threads: int, epochs: int, base: TrainSettings) -> dict:
    """Seconds per epoch (mean of ``epochs`` full epochs) and inference patches/s."""
    import torch

    torch.manual_seed(0)
    model = TORCH_MODELS[name](BANDS, patches.shape[-1])
    settings = dataclasses.replace(base, max_epochs=epochs, patience=epochs + 1)
    result = fit(
        model, patches, labels, seed=0, device="cpu", settings=settings, num_threads=threads
    )
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    predict_proba(model, patches, "cpu")
    inference = len(patches) / (time.perf_counter() - start)
    torch.set_num_threads(before)
    params = sum(p.numel() for p in model.parameters())
    return {
        "params": f"{params:,}",
        "epoch_s": result.seconds / result.epochs_run,
        "pps": inference,
    }


def forest_cost(patches, labels) -> dict:
    start = time.perf_counter()
    model = WindowStatsForest().fit(patches, labels, seed=0)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    model.predict_proba(patches)
    inference = len(patches) / (time.perf_counter() - start)
    nodes = len(model.to_ensemble().children_left)
    return {"params": f"{nodes:,} tree nodes", "fit_s": fit_s, "pps": inference}


def accuracy(name: str, patches, labels, xy, threads: int, settings: TrainSettings) -> dict:
    px = patches.shape[-1]
    if name == "random_forest":
        factory: Callable = WindowStatsForest
    else:
        factory = lambda: TORCH_MODELS[name](BANDS, px)  # noqa: E731
    start = time.perf_counter()
    result = cross_validate(
        factory,
        patches,
        labels,
        xy,
        folds=5,
        cv="spatial",
        block_m=px * PIXEL_M,
        patch_m=px * PIXEL_M,
        seed=0,
        device="cpu",
        settings=settings,
        num_threads=threads,
        description=name,
    )
    epochs = [f["epochs"] for f in result.fold_info if "epochs" in f]
    best = [f["best_epoch"] for f in result.fold_info if "best_epoch" in f]
    return {
        "auc": result.overall.auc,
        "ci": result.overall.ci95,
        "epochs": float(np.mean(epochs)) if epochs else None,
        "best": float(np.mean(best)) if best else None,
        "seconds": time.perf_counter() - start,
        "overlap": result.overlap_share,
    }


def _names(text: str) -> list[str]:
    names = [m for m in text.split(",") if m]
    unknown = set(names) - {*TORCH_MODELS, "random_forest"}
    if unknown:
        raise SystemExit(f"unknown models: {', '.join(sorted(unknown))}")
    return names


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="cost only, 1 epoch per model")
    parser.add_argument("--threads", type=int, default=available_cpus(), help="torch threads")
    parser.add_argument("--patch-px", type=int, default=128)
    parser.add_argument("--n", type=int, default=250, help="samples in the region")
    parser.add_argument("--models", default="silicnet,mobilenet_v3_small,resnet18")
    parser.add_argument("--cv-models", default="silicnet,random_forest")
    parser.add_argument("--seeds", type=int, default=1, help="synthetic regions (data seeds)")
    parser.add_argument("--settings", default="{}", help="JSON of TrainSettings overrides")
    args = parser.parse_args(argv)
    settings = TrainSettings(**json.loads(args.settings))
    models, cv_models = _names(args.models), _names(args.cv_models)
    patches, labels, xy, influence = synthetic_region(args.n, args.patch_px, seed=0)
    print(
        f"Region of {len(patches)} patches {patches.shape[1:]}, {labels.sum()} positive; "
        f"{args.threads} torch threads ({available_cpus()} cores available), "
        f"torch {torch.__version__}, {settings}\n"
    )

    acc: dict[str, list[dict]] = {name: [] for name in cv_models}
    oracle = []
    if not args.quick:
        for seed in range(args.seeds):
            data = (patches, labels, xy, influence) if seed == 0 else None
            x, y, sxy, infl = data or synthetic_region(args.n, args.patch_px, seed=seed)
            oracle.append(roc_auc_score(y, infl))
            for name in cv_models:
                acc[name].append(accuracy(name, x, y, sxy, args.threads, settings))

    epochs = 1 if args.quick else 2
    print("| model | parameters | s / epoch | inference patches/s | region CV (6 fits) | demo |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in models:
        row = torch_cost(name, patches, labels, args.threads, epochs, settings)
        runs = [a["epochs"] for a in acc.get(name, []) if a["epochs"]]
        n_epochs = statistics.mean(runs) if runs else settings.max_epochs
        region = 6 * n_epochs * row["epoch_s"]
        at = f"{n_epochs:.1f} epochs" if runs else f"max {n_epochs} epochs"
        print(
            f"| {name} | {row['params']} | {row['epoch_s']:.1f} | {row['pps']:.0f} "
            f"| {region:.0f} s ({at}) | {6 * region / 60:.1f} min |"
        )
    row = forest_cost(patches, labels)
    region = 6 * row["fit_s"]
    print(
        f"| random_forest | {row['params']} | fit {row['fit_s']:.1f} s | {row['pps']:.0f} "
        f"| {region:.0f} s | {6 * region / 60:.1f} min |"
    )

    if oracle:
        print(
            f"\nAccuracy: spatial 5-fold CV, blocks {args.patch_px * PIXEL_M:.0f} m; "
            f"oracle AUC {', '.join(f'{o:.3f}' for o in oracle)} (data seeds 0-{args.seeds - 1})\n"
        )
        print(
            "| model | data seed | AUC | 95 % CI | epochs run | best epoch | CV time "
            "| test patches overlapping a training patch |"
        )
        print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
        for name, runs in acc.items():
            for seed, a in enumerate(runs):
                auc = "null" if a["auc"] is None else f"{a['auc']:.3f}"
                ci = "" if a["ci"] is None else f"{a['ci'][0]:.3f}-{a['ci'][1]:.3f}"
                ep = "" if a["epochs"] is None else f"{a['epochs']:.1f}"
                best = "" if a["best"] is None else f"{a['best']:.1f}"
                print(
                    f"| {name} | {seed} | {auc} | {ci} | {ep} | {best} | {a['seconds']:.0f} s "
                    f"| {a['overlap']:.0%} |"
                )
            aucs = [a["auc"] for a in runs if a["auc"] is not None]
            if len(aucs) > 1:
                print(
                    f"| {name} | mean ± sd | {statistics.mean(aucs):.3f} ± "
                    f"{statistics.stdev(aucs):.3f} | | | | | |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
