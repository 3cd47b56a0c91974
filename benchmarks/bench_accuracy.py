"""Accuracy of SI-LICNet against the random forest and the oracle (issue 4, item 6).

Two tables, each over several seeds (mean and spread = sample standard deviation):

- Synthetic city: per region, the out-of-fold ROC AUC of SI-LICNet and each baseline
  under spatial block CV, beside the oracle AUC (the true Cd without lab noise ranking
  the same samples, from the city's ``truth/summary.json``). Each seed is a new city and
  a new training seed, at the ``soilsource demo`` profile by default (``--full``: the
  full-size city of ``soilsource synth`` with its config.yaml, about half an hour a seed).
- Meuse (``examples/meuse``, four Landsat bands only): labels Cd > 2.0 and Cd > 0.8
  mg/kg, spatial blocks of 400 m and 800 m, the seed changes folds and training.

Cross-validation is that of ``soilsource run`` (:func:`soilsource.pipeline.evaluate`'s
models, folds and standardisation) without the final model. ``--settings JSON`` overrides
training settings (e.g. ``'{"lr": 3e-3}'``) to screen a change on the same folds.

Usage: ``python benchmarks/bench_accuracy.py [--seeds N] [--full] [--only synthetic|meuse]
[--baselines random_forest,mobilenet_v3_small,resnet18] [--regions a,b] [--settings JSON]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

# soilsource before torch: it sets OMP_WAIT_POLICY, which torch reads when it loads
from soilsource import cli
from soilsource.config import Config, load_config
from soilsource.dataset import load_dataset
from soilsource.evaluation import cross_validate
from soilsource.pipeline import MODEL, block_m, model_factory, physical, train_settings
from soilsource.synth import write_city
from soilsource.training import TrainSettings

MEUSE = Path(__file__).resolve().parent.parent / "examples" / "meuse" / "config.yaml"
MEUSE_THRESHOLDS = (2.0, 0.8)
MEUSE_BLOCKS_M = (400.0, 800.0)
N_BOOT = 10  # the tables report AUC only; the interval is not used


def region_aucs(
    config: Config,
    models: list[str],
    settings: TrainSettings,
    *,
    regions: list[str] | None = None,
    block: float | None = None,
) -> dict[str, dict[str, float | None]]:
    """``{region: {model: out-of-fold AUC}}`` of one configuration, as ``soilsource run``."""
    dataset = load_dataset(config)
    out: dict[str, dict[str, float | None]] = defaultdict(dict)
    for name in models:
        factory = model_factory(name, dataset, config, settings)
        for region in dataset:
            if regions and region.name not in regions:
                continue
            table = region.table
            result = cross_validate(
                factory,
                physical(region.patches),
                table["label"].to_numpy(),
                table[["x", "y"]].to_numpy(),
                table["region"].to_numpy(),
                folds=config.train.folds,
                cv=config.train.cv,
                block_m=block if block is not None else block_m(config, table),
                patch_m=config.patch.size_m,
                seed=config.train.seed,
                device="cpu",
                settings=settings,
                final=False,
                n_boot=N_BOOT,
                description=f"{region.name}: {name}",
            )
            out[region.name][name] = result.regions[region.name].auc
    return dict(out)


def synthetic(args: argparse.Namespace, models: list[str], work: Path) -> list[str]:
    """The synthetic-city table (markdown lines)."""
    aucs: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seconds = []
    for seed in range(args.seeds):
        city = work / f"city_{seed}"
        summary = write_city(city, seed=seed, size_px=None if args.full else cli.DEMO_CITY_PX)
        config = load_config(city / "config.yaml")
        config.train.seed = seed
        if not args.full:
            config.patch.size_m, config.train.folds = cli.DEMO_PATCH_M, cli.DEMO_FOLDS
            config.train.max_epochs = cli.DEMO_EPOCHS
        settings = _settings(config, args.settings)
        start = time.perf_counter()
        result = region_aucs(config, models, settings, regions=args.regions)
        seconds.append(time.perf_counter() - start)
        for region, by_model in result.items():
            for name, auc in by_model.items():
                if auc is not None:
                    aucs[region][name].append(auc)
            aucs[region]["oracle"].append(summary["regions"][region]["oracle_auc"])
    profile = (
        "full-size city (soilsource synth), its config.yaml"
        if args.full
        else f"demo profile: {cli.DEMO_CITY_PX} px regions, {cli.DEMO_PATCH_M:g} m patches, "
        f"{cli.DEMO_FOLDS} spatial folds, {cli.DEMO_EPOCHS} epochs"
    )
    lines = [
        f"### Synthetic city: out-of-fold AUC per region, {args.seeds} seeds (city and "
        f"training), mean ± sd",
        "",
        f"{profile}; settings {_describe(settings)}; CV time per seed "
        f"{statistics.mean(seconds):.0f} s.",
        "",
        *_table(["region"], aucs, [*models, "oracle"]),
    ]
    return lines


def meuse(args: argparse.Namespace, models: list[str]) -> list[str]:
    """The Meuse table (markdown lines)."""
    aucs: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for threshold in MEUSE_THRESHOLDS:
        for block in MEUSE_BLOCKS_M:
            for seed in range(args.seeds):
                config = load_config(MEUSE)
                config.label.threshold, config.train.seed = threshold, seed
                settings = _settings(config, args.settings)
                result = region_aucs(config, models, settings, block=block)
                key = f"Cd > {threshold:g}, blocks {block:g} m"
                for name, auc in result["all"].items():
                    if auc is not None:
                        aucs[key][name].append(auc)
    return [
        f"### Meuse (Landsat red, nir, swir1, swir2; 960 m patches; 5 spatial folds): "
        f"out-of-fold AUC, {args.seeds} seeds, mean ± sd",
        "",
        f"settings {_describe(settings)}.",
        "",
        *_table(["label, CV blocks"], aucs, models),
    ]


def _settings(config: Config, overrides: dict) -> TrainSettings:
    base = train_settings(config)
    return TrainSettings(**{**base.__dict__, **overrides})


def _describe(settings: TrainSettings) -> str:
    default = TrainSettings()
    changed = {k: v for k, v in settings.__dict__.items() if getattr(default, k) != v}
    return json.dumps(changed) if changed else "training defaults"


def _table(
    first: list[str], aucs: dict[str, dict[str, list[float]]], columns: list[str]
) -> list[str]:
    names = [MODEL if c == MODEL else c for c in columns]
    lines = [
        "| " + " | ".join([*first, *names, "SI-LICNet - best baseline"]) + " |",
        "|" + "---|" * (len(first) + len(names) + 1),
    ]
    baselines = [c for c in columns if c not in (MODEL, "oracle")]
    wins = 0
    for key in sorted(aucs):
        cells = [_cell(aucs[key].get(c, [])) for c in columns]
        delta = ""
        if baselines and aucs[key].get(MODEL):
            ours = statistics.mean(aucs[key][MODEL])
            best = max(statistics.mean(aucs[key][b]) for b in baselines if aucs[key].get(b))
            delta = f"{ours - best:+.3f}"
            wins += ours > best
        lines.append("| " + " | ".join([key, *cells, delta]) + " |")
    lines += ["", f"SI-LICNet ahead of the best baseline in {wins} of {len(aucs)} rows.", ""]
    return lines


def _cell(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="full-size city (slow)")
    parser.add_argument("--only", choices=("synthetic", "meuse"), default=None)
    parser.add_argument("--baselines", default="random_forest", help="comma-separated")
    parser.add_argument("--regions", default="", help="synthetic regions (default all)")
    parser.add_argument("--settings", default="{}", help="TrainSettings overrides as JSON")
    args = parser.parse_args(argv)
    args.settings = json.loads(args.settings)
    args.regions = [r for r in args.regions.split(",") if r] or None
    models = [MODEL, *[b for b in args.baselines.split(",") if b]]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_accuracy_") as work:
        if args.only in (None, "synthetic"):
            print("\n".join(synthetic(args, models, Path(work))))
        if args.only in (None, "meuse"):
            print("\n".join(meuse(args, models)))
    print(f"Total {time.perf_counter() - start:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
