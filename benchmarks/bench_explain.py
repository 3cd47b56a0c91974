"""Explanations scored against the synthetic city's truth, and mosaic variants compared.

Per seed: build the synthetic city at the demo profile (``soilsource demo``: city side,
patch, folds and epochs from :mod:`soilsource.cli`; ``--quick`` for the quick one), run the
cross-validate and train SI-LICNet (no baselines: the explanation is SI-LICNet's), explain
as ``soilsource run`` does (:func:`soilsource.pipeline.explain`), and score its outputs with
:func:`soilsource.explain.scoring.score_run`: per region, the ROC AUC of the sensitivity
map for the true source pixels (top 10 % of the true anthropogenic contribution among the
covered pixels) against the other covered pixels, and the Spearman correlation of the
land-use ranking (``landuse_sensitivity.csv``) with the true ranking (``truth/summary.json``).

Then every sample's occlusion map is recomputed once under the run's final models and each
way of combining the per-sample maps into a region map (:data:`VARIANTS`) is scored the same
way, in memory (ranking by mean sensitivity per class over the covered pixels, as the rank
column of ``landuse_sensitivity.csv`` is). The tables give the mean and standard deviation
over regions and seeds. Occlusion itself is the same in every variant.

Usage: ``python benchmarks/bench_explain.py [--seeds 0 1] [--quick] [--size-px N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window

from soilsource import cli
from soilsource.config import load_config
from soilsource.dataset import load_dataset
from soilsource.explain.mosaic import accumulate_window, expected_map, mosaic_sensitivity
from soilsource.explain.scoring import ranking_spearman, score_run, source_auc
from soilsource.pipeline import (
    MODEL,
    build_metrics,
    evaluate,
    explain,
    final_model,
    physical,
    sensitivity_maps,
)
from soilsource.rundir import prepare
from soilsource.synth import write_city
from soilsource.training import TrainSettings


@dataclass
class RegionMaps:
    """What a variant may use: the per-sample maps, where they go, the model's view."""

    name: str
    maps: np.ndarray  # (N, S, S) occlusion sensitivity
    row_off: np.ndarray
    col_off: np.ndarray
    prob: np.ndarray  # the final model's probability for each sample's own patch
    label: np.ndarray
    height: int
    width: int


def weighted_mosaic(
    maps: np.ndarray, rm: RegionMaps, weights: np.ndarray | None = None, prior: float = 0.0
) -> np.ndarray:
    """Weighted mean of the maps on the region grid: sum w s / (sum w + prior).

    ``prior`` > 0 shrinks thinly covered pixels toward 0. Pixels no patch covers are NaN;
    covered pixels with zero total weight are 0 (no evidence).
    """
    window = Window(0, 0, rm.width, rm.height)
    weights = np.ones(len(maps)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = np.zeros((rm.height, rm.width))
    denom = np.zeros((rm.height, rm.width))
    for i in np.flatnonzero(weights != 0):
        t, c = accumulate_window(maps, rm.row_off, rm.col_off, window, samples=[i])
        total += weights[i] * t
        denom += weights[i] * c
    _, cover = accumulate_window(np.zeros_like(maps), rm.row_off, rm.col_off, window)
    out = np.divide(total, denom + prior, out=np.zeros_like(total), where=denom + prior > 0)
    out[cover == 0] = np.nan
    return out


def _relative(rm: RegionMaps) -> np.ndarray:
    return rm.maps - expected_map(rm.maps)


def _ratio(rm: RegionMaps) -> np.ndarray:
    plain = weighted_mosaic(rm.maps, rm)
    typical = weighted_mosaic(np.broadcast_to(expected_map(rm.maps), rm.maps.shape), rm)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.abs(typical) > 1e-12, plain / typical, 0.0)


def _contrast(rm: RegionMaps) -> np.ndarray:
    rel = _relative(rm)
    pos = weighted_mosaic(rel, rm, weights=rm.label.astype(float))
    return pos - weighted_mosaic(rel, rm, weights=1.0 - rm.label)


def _normalised(rm: RegionMaps) -> np.ndarray:
    scale = np.nansum(np.abs(rm.maps), axis=(1, 2), keepdims=True)
    return weighted_mosaic(rm.maps / np.where(scale > 0, scale, 1.0), rm)


VARIANTS: dict[str, Callable[[RegionMaps], np.ndarray]] = {
    "mean": lambda rm: mosaic_sensitivity(
        rm.maps, rm.row_off, rm.col_off, rm.height, rm.width, "mean"
    ),
    "relative (minus expected map)": lambda rm: mosaic_sensitivity(
        rm.maps, rm.row_off, rm.col_off, rm.height, rm.width, "relative"
    ),
    "positive drops only": lambda rm: weighted_mosaic(np.maximum(rm.maps, 0), rm),
    "probability-weighted": lambda rm: weighted_mosaic(rm.maps, rm, rm.prob),
    "contaminated samples only": lambda rm: weighted_mosaic(rm.maps, rm, rm.label),
    "each map L1-normalised": _normalised,
    "ratio to expected": _ratio,
    "relative, shrunk (+2 maps of 0)": lambda rm: weighted_mosaic(_relative(rm), rm, prior=2.0),
    "relative, probability-weighted": lambda rm: weighted_mosaic(_relative(rm), rm, rm.prob),
    "relative, contaminated minus clean": _contrast,
}


def demo_profile(quick: bool) -> tuple[int, float, int, int]:
    """City side (px), patch (m), folds and epochs of ``soilsource demo [--quick]``."""
    if quick or not hasattr(cli, "DEMO_CITY_PX"):
        return cli.QUICK_CITY_PX, cli.QUICK_PATCH_M, cli.QUICK_FOLDS, cli.QUICK_EPOCHS
    return cli.DEMO_CITY_PX, cli.DEMO_PATCH_M, cli.DEMO_FOLDS, cli.DEMO_EPOCHS


def region_maps(cv, dataset, config) -> list[RegionMaps]:
    """Every sample's occlusion map under the run's final model, per region."""
    out = []
    for region in dataset:
        model = final_model(cv, region.name)
        if model is None:
            continue
        raster = region.rasters[0]
        maps = sensitivity_maps(model, region.patches, config, raster.pixel_size_m)
        # a model of the concentration scores each sample against its own limit
        limits = region.table["limit"].to_numpy() if model.inner.link_ is not None else None
        prob = np.asarray(model.predict_proba(physical(region.patches), limits), np.float64)
        patches = region.patches
        out.append(
            RegionMaps(
                region.name,
                maps,
                patches.row_off,
                patches.col_off,
                prob,
                region.labels,
                raster.height,
                raster.width,
            )
        )
    return out


def score_map(
    mosaic: np.ndarray, city: Path, region: str, ranking: list[str]
) -> tuple[float, float]:
    """Source-pixel AUC and land-use Spearman of an in-memory region map."""
    with rasterio.open(city / "truth" / "contribution" / f"{region}.tif") as src:
        contribution = src.read(1, masked=True).astype(np.float64).filled(np.nan)
    with rasterio.open(city / "landuse" / f"{region}.tif") as src:
        landuse = src.read(1)
    table = pd.read_csv(city / "landuse" / "classes.csv")
    covered = np.isfinite(mosaic)
    means = {
        name: float(mosaic[covered & (landuse == code)].mean())
        for code, name in zip(table["code"], table["name"], strict=True)
        if (covered & (landuse == code)).any()
    }
    estimated = sorted(means, key=lambda k: -means[k])
    return source_auc(mosaic, contribution), ranking_spearman(estimated, ranking)


@dataclass
class SeedResult:
    official: pd.DataFrame  # score_run of the run directory, plus the model's AUC
    variants: pd.DataFrame  # seed, region, variant, source_auc, spearman
    seconds: dict[str, float]  # training (SI-LICNet CV + final) and explanation


def one_seed(seed: int, quick: bool, size_px: int | None, workdir: Path) -> SeedResult:
    """Train (SI-LICNet only), explain and score one synthetic city."""
    city_px, patch_m, folds, epochs = demo_profile(quick)
    run_dir = prepare(workdir / f"run{seed}", force=True)
    city = run_dir / "city"
    write_city(city, seed=seed, size_px=size_px or city_px)
    config = load_config(city / "config.yaml")
    config.train.seed = seed
    config.patch.size_m, config.train.folds = patch_m, folds
    config.model.members = getattr(cli, "DEMO_MEMBERS", 1)  # what the demo trains
    config.model.baselines = []  # the explanation is SI-LICNet's; baselines only cost time
    seconds = {}
    start = time.perf_counter()
    dataset = load_dataset(config)
    cv = evaluate(dataset, config, settings=TrainSettings(max_epochs=epochs))
    seconds["training"] = time.perf_counter() - start
    start = time.perf_counter()
    explain(run_dir, dataset, config, cv[MODEL])  # what soilsource run writes
    seconds["explanation"] = time.perf_counter() - start
    official = score_run(run_dir, city)
    aucs = build_metrics(dataset, config, cv)["regions"]
    official.insert(1, "model_auc", [aucs[r]["auc"] for r in official.region])
    official.insert(0, "seed", seed)
    truth = json.loads((city / "truth" / "summary.json").read_text(encoding="utf-8"))["regions"]
    rows = []
    for rm in region_maps(cv[MODEL], dataset, config):
        np.savez(run_dir / f"maps_{rm.name}.npz", **vars(rm))
        for name, variant in VARIANTS.items():
            auc, rho = score_map(variant(rm), city, rm.name, truth[rm.name]["landuse_ranking"])
            rows.append(
                {
                    "seed": seed,
                    "region": rm.name,
                    "variant": name,
                    "source_auc": auc,
                    "spearman": rho,
                }
            )
    result = SeedResult(official, pd.DataFrame(rows), seconds)
    official.to_csv(run_dir / "official_scores.csv", index=False)
    result.variants.to_csv(run_dir / "variant_scores.csv", index=False)
    return result


def markdown(frame: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A frame as a markdown table (index included), without the tabulate package."""
    frame = frame.reset_index()
    head = [
        " ".join(map(str, c)).strip() if isinstance(c, tuple) else str(c) for c in frame.columns
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in frame.itertuples(index=False):
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_scores(official: pd.DataFrame, variants: pd.DataFrame) -> None:
    """The score tables: the runs' own outputs, then the aggregation variants."""
    print("Per region, the run's own outputs (score_run), one row per seed:\n")
    print(markdown(official.drop(columns=["n_classes_compared"]).set_index(["seed", "region"])))
    cols = ["model_auc", "source_auc", "spearman_landuse", "spearman_landuse_covered"]
    summary = official.groupby("region", sort=False)[cols].agg(["mean", "std"])
    print("\nPer region over seeds (mean, sd):\n")
    print(markdown(summary))
    table = variants.groupby("variant", sort=False)[["source_auc", "spearman"]].agg(
        ["mean", "std", "min"]
    )
    table.columns = [" ".join(c) for c in table.columns]
    base = variants[variants.variant == "mean"].set_index(["seed", "region"])
    for name, group in variants.groupby("variant", sort=False):
        diff = (
            group.set_index(["seed", "region"])[["source_auc", "spearman"]]
            - base[["source_auc", "spearman"]]
        )
        table.loc[name, "source_auc better than mean"] = (
            f"{(diff.source_auc > 0).sum()}/{len(diff)}"
        )
        table.loc[name, "spearman better than mean"] = f"{(diff.spearman > 0).sum()}/{len(diff)}"
    print("\nAggregation variants, over regions and seeds (source AUC: 0.5 is chance; 'better")
    print("than mean': region-seeds where the variant beats the plain mean):\n")
    print(markdown(table))
    per_region = variants.pivot_table(
        index="variant", columns="region", values="source_auc", sort=False
    )
    print("\nSource AUC per region (mean over seeds):\n")
    print(markdown(per_region))


def render_region(run_dir: Path, region: str, path: Path, title: str) -> Path:
    """Sensitivity of one region over its imagery: the run's map with its hotspots, the
    'relative' map of the same per-sample maps, and the true contribution with the sources."""
    import geopandas as gpd
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from soilsource.atomic import atomic_path

    city = run_dir / "city"
    with rasterio.open(city / "imagery" / f"{region}.tif") as src:
        rgb = src.read((3, 2, 1)).astype(np.float64)
        b = src.bounds
    extent = (b.left, b.right, b.bottom, b.top)
    rgb = np.clip(np.moveaxis(rgb, 0, -1) / 10000.0 / 0.25, 0, 1) ** 0.75
    with rasterio.open(run_dir / "sensitivity" / f"{region}.tif") as src:
        written = src.read(1)
    with rasterio.open(city / "truth" / "contribution" / f"{region}.tif") as src:
        contribution = src.read(1)
    rm = np.load(run_dir / f"maps_{region}.npz")
    relative = mosaic_sensitivity(
        rm["maps"], rm["row_off"], rm["col_off"], int(rm["height"]), int(rm["width"]), "relative"
    )
    hotspots = gpd.read_file(run_dir / "hotspots.gpkg", layer="hotspots")
    sources = gpd.read_file(city / "truth" / "sources.gpkg", layer="sources")
    sources = sources[sources["region"] == region]
    samples = pd.read_csv(city / "truth" / "samples.csv")
    samples = samples[samples["region"] == region]
    fig, axes = plt.subplots(1, 3, figsize=(24, 8), sharex=True, sharey=True)
    panels = [
        ("sensitivity as written (mean), hotspots (yellow)", written),
        ("aggregation 'relative': minus the expected map", relative),
    ]
    for ax, (name, layer) in zip(axes, panels, strict=False):
        ax.imshow(rgb, extent=extent)
        lim = np.nanpercentile(np.abs(layer), 99)
        image = ax.imshow(
            np.ma.masked_invalid(layer),
            extent=extent,
            cmap="RdBu_r",
            vmin=-lim,
            vmax=lim,
            alpha=0.6,
        )
        fig.colorbar(image, ax=ax, shrink=0.7, label="drop in probability")
        ax.set_title(name)
    hotspots[hotspots["region"] == region].boundary.plot(ax=axes[0], color="yellow", linewidth=1.2)
    for ax in axes[:2]:
        colours = np.where(samples["label"], "black", "white")
        ax.scatter(samples["x"], samples["y"], s=8, c=colours, edgecolors="k", linewidths=0.3)
    axes[2].imshow(rgb, extent=extent)
    image = axes[2].imshow(
        np.ma.masked_where(contribution <= 0, contribution), extent=extent, cmap="magma", alpha=0.7
    )
    fig.colorbar(image, ax=axes[2], shrink=0.7, label="mg/kg")
    kinds = sources.geom_type
    sources[kinds == "Polygon"].boundary.plot(ax=axes[2], color="cyan", linewidth=0.8)
    sources[kinds == "Point"].plot(ax=axes[2], color="cyan", markersize=12)
    sources[kinds.str.contains("Line")].plot(ax=axes[2], color="lime", linewidth=0.8)
    axes[2].set_title("true anthropogenic Cd contribution; sources (cyan, roads green)")
    for ax in axes:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=70, format="png")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--quick", action="store_true", help="the demo --quick profile")
    parser.add_argument("--size-px", type=int, default=None, help="city side instead of the demo's")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs here")
    parser.add_argument(
        "--figure",
        metavar="REGION",
        help="also draw docs/images/sensitivity_REGION.png from the first seed",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_explain_") as tmp:
        workdir = args.workdir or Path(tmp)
        for seed in args.seeds:
            results.append(one_seed(seed, args.quick, args.size_px, workdir))
        if args.figure:
            first = results[0].official
            row = first[first.region == args.figure].iloc[0]
            title = (
                f"{args.figure}, synthetic city seed {args.seeds[0]}, demo profile: model AUC "
                f"{row.model_auc:.3f}, source AUC of the map {row.source_auc:.3f}, land-use "
                f"Spearman {row.spearman_landuse:.3f}; dots: samples (black = contaminated)"
            )
            render_region(
                workdir / f"run{args.seeds[0]}",
                args.figure,
                Path(__file__).resolve().parent.parent
                / "docs"
                / "images"
                / f"sensitivity_{args.figure}.png",
                title,
            )
    city_px, patch_m, folds, epochs = demo_profile(args.quick)
    print(
        f"Synthetic city, {'demo --quick' if args.quick else 'demo'} profile: "
        f"{args.size_px or city_px} px regions, {patch_m:g} m patches, {folds} folds, "
        f"{epochs} epochs; seeds {', '.join(map(str, args.seeds))}. Load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {time.perf_counter() - start:.0f} s.\n"
    )
    print_scores(
        pd.concat([r.official for r in results], ignore_index=True),
        pd.concat([r.variants for r in results], ignore_index=True),
    )
    steps = pd.DataFrame([r.seconds for r in results], index=pd.Index(args.seeds, name="seed"))
    print("\nSeconds (wall, shared machine): training = SI-LICNet CV and final models;")
    print("explanation = occlusion, mosaics, land-use statistics and hotspots of all regions:\n")
    print(markdown(steps, ".1f"))


if __name__ == "__main__":
    main()
