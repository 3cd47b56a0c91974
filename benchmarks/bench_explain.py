"""Explanations scored against the synthetic city's truth, and mosaic variants compared.

Per seed: build the synthetic city at the demo profile (``soilsource demo``: city side,
patch, folds and epochs from :mod:`soilsource.cli`; ``--quick`` for the quick one), run the
cross-validate and train SI-LICNet (no baselines: the explanation is SI-LICNet's), explain
as ``soilsource run`` does (:func:`soilsource.pipeline.runner.explain`), and score its outputs with
:func:`soilsource.explain.scoring.score_run`: per region, the ROC AUC of the sensitivity
map for the true source pixels (top 10 % of the true anthropogenic contribution among the
covered pixels) against the other covered pixels, and the Spearman correlation of the
land-use ranking (``landuse_sensitivity.csv``) with the true ranking (``truth/summary.json``).

Then every sample's occlusion map is recomputed once under the run's final models and each
variant of attribution (what a drop measures, :data:`OUTPUTS`; the occlusion baseline,
:data:`BASELINES`; how the per-sample maps combine, :data:`AGGREGATIONS`) is scored the same
way, in memory (ranking by mean sensitivity per class over the covered pixels, as the rank
column of ``landuse_sensitivity.csv`` is). The tables give the mean and standard deviation
over regions and seeds. Occlusion itself is the same in every variant.

``--profile default`` trains as ``soilsource run`` does by default (``model.members``,
``model.pretrain``, ``train.min_steps``, 20 epochs; what ``bench_accuracy`` measures) on
the demo's city, patches and folds, instead of the demo's one network for 10 epochs;
``--no-variants`` scores only the run's own outputs (the variants recompute every map).

Usage: ``python benchmarks/bench_explain.py [--seeds 0 1] [--quick] [--size-px N]
[--profile demo|default] [--no-variants]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import torch
from rasterio.windows import Window

from soilsource import cli
from soilsource.config import load_config
from soilsource.data.dataset import load_dataset
from soilsource.explain.mosaic import accumulate_window, expected_map, mosaic_sensitivity
from soilsource.explain.scoring import candidate_scores, ranking_spearman, score_run, source_auc
from soilsource.explain.sensitivity import occlusion_px
from soilsource.pipeline.runner import (
    MODEL,
    build_metrics,
    evaluate,
    explain,
    final_model,
)
from soilsource.rundir import prepare
from soilsource.synth import write_city

SHIPPED = "raw/mean"
"""The output/baseline that ``soilsource run`` ships (pipeline.attribution_output)."""


@dataclass
class RegionMaps:
    """What a variant may use: the per-sample maps, where they go, the samples' values."""

    name: str
    maps: dict[str, np.ndarray]  # (N, S, S) occlusion maps per "output/baseline"
    row_off: np.ndarray
    col_off: np.ndarray
    prob: np.ndarray  # the final model's probability for each sample's own patch
    label: np.ndarray
    exceedance: np.ndarray  # max(log(value / limit), 0): the measured weight
    height: int
    width: int
    window_px: int


def weighted_mosaic(
    maps: np.ndarray, rm: RegionMaps, weights: np.ndarray | None = None, by_weight: bool = False
) -> np.ndarray:
    """Mosaic of ``weights_i * maps_i``: divided by the number of maps covering each pixel
    (the weighted evidence per sample), or with ``by_weight`` by the weights' sum there (a
    weighted mean). Pixels no patch covers are NaN; covered ones without weight are 0."""
    window = Window(0, 0, rm.width, rm.height)
    w = np.ones(len(maps)) if weights is None else np.asarray(weights, dtype=np.float64)
    total, cover = accumulate_window(maps * w[:, None, None], rm.row_off, rm.col_off, window)
    denom = cover.astype(float)
    if by_weight:
        ones = np.broadcast_to(w[:, None, None], maps.shape)
        denom, _ = accumulate_window(ones, rm.row_off, rm.col_off, window)
    out = np.divide(total, denom, out=np.zeros_like(total), where=denom > 0)
    out[cover == 0] = np.nan
    return out


def _relative(maps: np.ndarray) -> np.ndarray:
    return maps - expected_map(maps)


AGGREGATIONS: dict[str, Callable[[np.ndarray, RegionMaps], np.ndarray]] = {
    "mean": lambda m, rm: weighted_mosaic(m, rm),
    "relative": lambda m, rm: weighted_mosaic(_relative(m), rm),
    "positive only": lambda m, rm: weighted_mosaic(np.maximum(m, 0), rm),
    "absolute": lambda m, rm: weighted_mosaic(np.abs(m), rm),
    "probability-weighted": lambda m, rm: weighted_mosaic(m, rm, rm.prob, by_weight=True),
    "exceedance-weighted": lambda m, rm: weighted_mosaic(m, rm, rm.exceedance),
    "relative, exceedance-weighted": lambda m, rm: weighted_mosaic(_relative(m), rm, rm.exceedance),
}
"""Ways of combining the per-sample maps into a region map (see docs/method.md)."""

BASELINES = ("mean", "blur")
"""Occlusion baselines: 0 (the band mean), or the patch blurred with a Gaussian of half a
window (what the surroundings look like: a local baseline)."""

OUTPUTS = ("probability", "raw")
"""What a drop measures: sigmoid of the output, or the output (log concentration) itself."""


def region_maps(cv, dataset, config) -> list[RegionMaps]:
    """Every sample's occlusion map under the run's final model, per region, for every
    output and baseline."""
    from scipy import ndimage

    from soilsource.data.context import context_channels
    from soilsource.explain.candidates import exceedance_weights
    from soilsource.explain.occlusion import occlusion_sensitivity
    from soilsource.explain.sensitivity import occlusion_baseline, occlusion_px

    out = []
    for region in dataset:
        model = final_model(cv, region.name)
        if model is None:
            continue
        raster = region.rasters[0]
        window_px, stride_px = occlusion_px(
            config.explain.window_m, config.explain.stride_m, raster.pixel_size_m
        )
        x = torch.from_numpy(model.stats_.transform(region.patches))
        blur = ndimage.gaussian_filter(
            x.numpy(), sigma=(0, 0, window_px / 2, window_px / 2), mode="nearest"
        )
        # the context bands are held as in the run (explain.occlude_context)
        held = () if config.explain.occlude_context else context_channels(dataset.band_names)
        blur = torch.from_numpy(blur)
        blur[:, list(held)] = x[:, list(held)]
        maps = {}
        for output in OUTPUTS:
            for name, base in zip(BASELINES, (occlusion_baseline(x, 0.0, held), blur), strict=True):
                maps[f"{output}/{name}"] = occlusion_sensitivity(
                    model.inner.module, x, window_px, stride_px, base, output=output
                ).numpy()
        # a model of the concentration scores each sample against its own limit
        limits = region.table["limit"].to_numpy() if model.inner.link_ is not None else None
        prob = np.asarray(model.predict_proba(region.patches.physical(), limits), np.float64)
        table = region.table
        patches = region.patches
        out.append(
            RegionMaps(
                region.name,
                maps,
                patches.row_off,
                patches.col_off,
                prob,
                region.labels,
                exceedance_weights(table["value"].to_numpy(float), table["limit"].to_numpy(float)),
                raster.height,
                raster.width,
                window_px,
            )
        )
    return out


def object_precision(rm: RegionMaps, maps: np.ndarray, city: Path, k: int = 10) -> dict:
    """Precision@k of objects ranked as candidates.gpkg ranks them (measured-exceedance
    weights) and unweighted, against the emitting share of industrial objects."""
    from rasterio.features import rasterize

    from soilsource.explain.candidates import object_effects, object_labels, sample_effects

    with rasterio.open(city / "landuse" / f"{rm.name}.tif") as src:
        landuse, transform = src.read(1), src.transform
    table = pd.read_csv(city / "landuse" / "classes.csv")
    classes = dict(zip(table["code"].astype(int), table["name"], strict=True))
    sources = gpd.read_file(city / "truth" / "sources.gpkg", layer="sources")
    parcels = sources[(sources["region"] == rm.name) & (sources["type"] == "industrial_site")]
    emitting = np.zeros(landuse.shape, np.uint8)
    if len(parcels):
        emitting = rasterize([(g, 1) for g in parcels.geometry], landuse.shape, transform=transform)
    labels, names = object_labels(landuse, classes, 2 * rm.window_px)
    area = np.bincount(labels.ravel())
    hit = np.bincount(labels.ravel(), emitting.ravel().astype(float)) / np.maximum(area, 1) >= 0.5
    industrial = np.array([n == "industrial" for n in names])
    effects = sample_effects(maps, rm.row_off, rm.col_off, labels, rm.window_px)
    out = {"emitting_share": float(hit[industrial].mean())}
    for key, weights in (("weighted", rm.exceedance), ("unweighted", np.ones(len(maps)))):
        ranked = object_effects(effects, weights, n_boot=1)["effect"]
        top = ranked[ranked > 0].sort_values(ascending=False).index[:k]
        out[f"precision@{k} {key}"] = float(hit[top].mean()) if len(top) else math.nan
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
    """Train (SI-LICNet only), explain and score one synthetic city.

    Training follows the demo (``cli.apply_demo_profile``: one network, no pretraining) unless
    ``--profile default`` asked for the configuration's defaults (``model.members``,
    ``model.pretrain``, ``train.min_steps``, 20 epochs), as ``bench_accuracy`` trains them.
    """
    run_dir = prepare(workdir / f"run{seed}", force=True)
    city = run_dir / "city"
    write_city(city, seed=seed, size_px=size_px or cli.demo_profile(quick)[0])
    config = load_config(city / "config.yaml")
    config.train.seed = seed
    # the demo's patch and folds; its training too, unless --profile default
    cli.apply_demo_profile(config, quick=quick, training=not SETTINGS.get("default_training"))
    config.model.baselines = []  # the explanation is SI-LICNet's; baselines only cost time
    config = with_settings(config)
    seconds = {}
    start = time.perf_counter()
    dataset = load_dataset(config)
    cv = evaluate(dataset, config)  # the configuration's training, as soilsource run does
    seconds["training"] = time.perf_counter() - start
    start = time.perf_counter()
    explain(run_dir, dataset, config, cv[MODEL])  # what soilsource run writes
    seconds["explanation"] = time.perf_counter() - start
    official = score_run(run_dir, city)
    aucs = build_metrics(dataset, config, cv)["regions"]
    official.insert(1, "model_auc", [aucs[r]["auc"] for r in official.region])
    official.insert(2, "skill", [bool(aucs[r]["skill"]) for r in official.region])
    window_px, _ = occlusion_px(config.explain.window_m, config.explain.stride_m, 10.0)
    candidates = gpd.read_file(run_dir / "candidates.gpkg", layer="candidates")
    precision = candidate_scores(candidates, city, cell_px=2 * window_px)
    official = official.merge(precision, on="region", how="left")
    official.insert(0, "seed", seed)
    truth = json.loads((city / "truth" / "summary.json").read_text(encoding="utf-8"))["regions"]
    rows = []
    for rm in region_maps(cv[MODEL], dataset, config) if SETTINGS.get("variants", True) else []:
        np.savez(run_dir / f"maps_{rm.name}.npz", maps=rm.maps[SHIPPED], row_off=rm.row_off,
                 col_off=rm.col_off, height=rm.height, width=rm.width)  # fmt: skip
        for key, maps in rm.maps.items():
            precision = object_precision(rm, maps, city)
            for name, aggregate in AGGREGATIONS.items():
                mosaic = aggregate(maps, rm)
                auc, rho = score_map(mosaic, city, rm.name, truth[rm.name]["landuse_ranking"])
                rows.append(
                    {
                        "seed": seed,
                        "region": rm.name,
                        "skill": bool(aucs[rm.name]["skill"]),
                        "variant": f"{key}, {name}",
                        "source_auc": auc,
                        "spearman": rho,
                        **precision,
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
    """The score tables: the runs' own outputs, then the variants of attribution."""
    print("Per region, the run's own outputs (score_run, candidate_scores), one row per seed:\n")
    print(
        markdown(official.drop(columns=["n_classes_compared", "k"]).set_index(["seed", "region"]))
    )
    cols = [
        "model_auc",
        "source_auc",
        "spearman_landuse",
        "precision_at_k",
        "emitting_share",
        "informed_precision_at_k",
    ]
    for title, part in (
        ("all regions", official),
        ("regions with skill", official[official.skill]),
    ):
        means = part[cols].mean()
        ratio = means["precision_at_k"] / means["emitting_share"]
        ceiling = means["informed_precision_at_k"] / means["emitting_share"]
        print(
            f"\nMean over {title} and seeds ({len(part)} region-seeds): source AUC "
            f"{means['source_auc']:.3f}, land-use Spearman {means['spearman_landuse']:.3f}, "
            f"candidate precision@10 {means['precision_at_k']:.3f} against an emitting share "
            f"of {means['emitting_share']:.3f} ({ratio:.2f} x); an inspector who knew every "
            f"sample's exact industrial-site Cd (informed_picks) would reach "
            f"{means['informed_precision_at_k']:.3f} ({ceiling:.2f} x)."
        )
    summary = official.groupby("region", sort=False)[cols].agg(["mean", "std"])
    print("\nPer region over seeds (mean, sd):\n")
    print(markdown(summary))
    scores = ["source_auc", "spearman", "precision@10 weighted", "precision@10 unweighted"]
    if variants.empty:
        print("\nVariants of attribution not scored (--no-variants).")
        return
    for title, part in (
        ("all regions", variants),
        ("regions with skill", variants[variants.skill]),
    ):
        table = part.groupby("variant", sort=False)[[*scores, "emitting_share"]].mean()
        base = part[part.variant == "probability/mean, mean"].set_index(["seed", "region"])
        for name, group in part.groupby("variant", sort=False):
            diff = group.set_index(["seed", "region"]).source_auc - base.source_auc
            table.loc[name, "source_auc better than before"] = f"{(diff > 0).sum()}/{len(diff)}"
        print(f"\nVariants (output/baseline, aggregation), mean over {title} and seeds; 'before'")
        print("is probability/mean, mean, the attribution before issue 13; precision@10 of the")
        print("objects ranked with and without the measured-exceedance weights:\n")
        print(markdown(table))


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


def meuse(workdir: Path, seeds: list[int]) -> None:
    """The Meuse example run as shipped (one run per seed), its sensitivity by flooding
    frequency and by distance to the river (examples/meuse/analyze_sensitivity.py): the
    known answer is often-flooded land first and near-river above far."""
    import importlib.util

    from soilsource.pipeline.runner import run

    root = Path(__file__).resolve().parent.parent / "examples" / "meuse"
    spec = importlib.util.spec_from_file_location("analyze", root / "analyze_sensitivity.py")
    analyze = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(analyze)
    rows = []
    for seed in seeds:
        config = with_settings(load_config(root / "config.yaml"))
        config.train.seed = seed
        start = time.perf_counter()
        out = run(config, workdir / f"meuse{seed}", force=True).out
        tables = analyze.analyze(out)
        flood = tables["by flooding frequency"].set_index("group")["sens_mean"]
        near = tables["near vs far"]["sens_mean"].to_numpy()
        metrics = json.loads((out / "metrics.json").read_text())["regions"]["all"]
        drivers = pd.read_csv(out / "landuse_sensitivity.csv")
        rows.append(
            {
                "seed": seed,
                "model_auc": metrics["auc"],
                "skill": metrics["skill"],
                "ranking": " > ".join(flood.sort_values(ascending=False).index),
                **{f"mean {k}": v for k, v in flood.items()},
                "near": near[0],
                "far": near[1],
                "drivers": ", ".join(drivers.loc[drivers["driver"], "class"]) or "none",
                "seconds": time.perf_counter() - start,
            }
        )
        print(f"\nMeuse, seed {seed}:")
        for title, table in tables.items():
            print(f"\n{title}:\n")
            print(analyze.markdown(table))
    print("\nMeuse over seeds (sensitivity means; the known answer: the class flooded about")
    print("every 2 years first, near-river above far):\n")
    print(markdown(pd.DataFrame(rows).set_index("seed")))


SETTINGS: dict = {}
"""patch.context_m, explain.occlude_context and explain.occlude_with when given on the
command line."""


def with_settings(config):
    """``config`` with the command line's settings (both cases, every run)."""
    if "occlude_with" in SETTINGS:
        config.explain.occlude_with = SETTINGS["occlude_with"]
    if "context_m" in SETTINGS:
        config.patch.context_m = SETTINGS["context_m"]
    if "occlude_context" in SETTINGS:
        config.explain.occlude_context = SETTINGS["occlude_context"]
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--quick", action="store_true", help="the demo --quick profile")
    parser.add_argument("--size-px", type=int, default=None, help="city side instead of the demo's")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs here")
    parser.add_argument(
        "--meuse-seeds", type=int, nargs="*", default=[0], help="Meuse runs (none: skip)"
    )
    parser.add_argument(
        "--figure",
        metavar="REGION",
        help="also draw docs/images/sensitivity_REGION.png from the first seed",
    )
    parser.add_argument(
        "--context-m", default=None, help="patch.context_m: comma-separated metres, or 'none'"
    )
    parser.add_argument(
        "--occlude-context", choices=("yes", "no"), default=None, help="explain.occlude_context"
    )
    parser.add_argument(
        "--occlude-with",
        choices=("mean", "typical", "clean"),
        default=None,
        help="explain.occlude_with",
    )
    parser.add_argument(
        "--profile",
        choices=("demo", "default"),
        default="demo",
        help="training: the demo's (one network, 10 epochs) or the defaults (bench_accuracy's)",
    )
    parser.add_argument(
        "--no-variants",
        action="store_true",
        help="score only the run's own outputs (the variants recompute every occlusion map)",
    )
    args = parser.parse_args(argv)
    if args.profile == "default":
        SETTINGS["default_training"] = True
    if args.no_variants:
        SETTINGS["variants"] = False
    if args.occlude_with is not None:
        SETTINGS["occlude_with"] = args.occlude_with
    if args.context_m is not None:
        SETTINGS["context_m"] = [
            float(m) for m in args.context_m.split(",") if m not in ("", "none")
        ]
    if args.occlude_context is not None:
        SETTINGS["occlude_context"] = args.occlude_context == "yes"
    if SETTINGS:
        print(f"Settings from the command line: {SETTINGS}.\n")
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
    city_px, patch_m, folds, epochs = cli.demo_profile(args.quick)
    training = (
        "the default training (model.members, model.pretrain, train.min_steps, 20 epochs)"
        if args.profile == "default"
        else f"{epochs} epochs, one network"
    )
    print(
        f"Synthetic city, {'demo --quick' if args.quick else 'demo'} profile: "
        f"{args.size_px or city_px} px regions, {patch_m:g} m patches, {folds} folds, "
        f"{training}; seeds {', '.join(map(str, args.seeds))}. Load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {time.perf_counter() - start:.0f} s.\n"
    )
    print_scores(
        pd.concat([r.official for r in results], ignore_index=True),
        pd.concat([r.variants for r in results], ignore_index=True),
    )
    if args.meuse_seeds:
        with tempfile.TemporaryDirectory(prefix="bench_explain_meuse_") as tmp:
            meuse(args.workdir or Path(tmp), args.meuse_seeds)
    steps = pd.DataFrame([r.seconds for r in results], index=pd.Index(args.seeds, name="seed"))
    print("\nSeconds (wall, shared machine): training = SI-LICNet CV and final models;")
    print("explanation = occlusion, mosaics, land-use statistics and hotspots of all regions:\n")
    print(markdown(steps, ".1f"))


if __name__ == "__main__":
    main()
