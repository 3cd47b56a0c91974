"""Accuracy of SI-LICNet against the baselines, the levers of issue 12, and the ceilings.

Per case and region, over several seeds, under each fold design (``knndm``, the
default and deployment-matched estimate; ``buffered``, the "far from any sample"
estimate in which no test patch overlaps a training patch):

- out-of-fold ROC AUC of each SI-LICNet variant (``--variants``: the old default, the new
  default and the ablations between them; :data:`VARIANTS`) and each baseline (the random
  forest and, with ``--baselines``, MobileNetV3-small), all on the same folds;
- SI-LICNet (new default) minus the random forest: the paired-bootstrap difference of
  :func:`soilsource.learn.evaluation.paired_auc_difference`, pooled over seeds as the mean
  difference and the mean of the interval ends (``diff [lo, hi]``), and how many seeds'
  intervals lie above 0;
- Spearman's rho of the out-of-fold predicted median (``pred_value``) with the measured
  value, for the models of the concentration;
- the ceilings of the synthetic city (``truth/summary.json``): ``visible_oracle_auc``
  (what the imagery can show: every industrial parcel at its expected emission) and
  ``oracle_auc`` (the true contribution, out of any model's reach);
- cross-validation seconds per region and model (training every fold).

Cases: ``synthetic`` (the demo profile's city: ``soilsource demo`` regions of
``cli.DEMO_CITY_PX`` px, ``cli.DEMO_PATCH_M`` m patches, ``cli.DEMO_FOLDS`` folds; each seed
a new city and a new training seed) and ``meuse`` (``examples/meuse/config.yaml`` as
shipped: Cd > 2 mg/kg, 960 m patches, 5 folds; the seed changes folds and training).
The cross-validation is :func:`soilsource.pipeline.runner.evaluate`, the code behind
``soilsource run``, without the final models.

Usage: ``python benchmarks/bench_accuracy.py [--seeds N] [--first-seed S] [--only synthetic|meuse]
[--designs knndm,buffered] [--variants a,b] [--baselines random_forest,mobilenet_v3_small]
[--regions a,b] [--patch-m M] [--city-patch-m M] [--context-m M,...|none]``
(``--patch-m``: Meuse with another patch side than the example's, e.g. 960 m, its side
before issue 12; ``--city-patch-m``: the synthetic city's, e.g. 1280 m, the side its own
``config.yaml`` sets, instead of the demo's 640 m; ``--context-m``: the
context bands of :mod:`soilsource.data.context` for every model of both cases). The variant
``pooled`` and a baseline with the suffix ``@pooled`` (``random_forest@pooled``) train one
model on all regions' samples at once (``train.scope: pooled``, pooled folds) and are scored
region by region; each variant is paired with the forest of its own training scope.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

# soilsource before torch: it sets OMP_WAIT_POLICY, which torch reads when it loads
from soilsource import cli
from soilsource.config import Config, ModelConfig, TrainConfig, load_config
from soilsource.data.dataset import Dataset, load_dataset
from soilsource.learn.evaluation import paired_auc_difference
from soilsource.learn.training import TrainSettings
from soilsource.pipeline.runner import (
    MODEL,
    evaluate,
    oof,
    oof_values,
    region_result,
    train_settings,
)
from soilsource.synth import write_city

MEUSE = Path(__file__).resolve().parent.parent / "examples" / "meuse" / "config.yaml"
N_BOOT = 1000
FOREST = "random_forest"


@dataclass(frozen=True)
class Variant:
    """One SI-LICNet configuration: what it learns, its members, its training length."""

    label: str
    target: str
    members: int | None  # None: the configuration's default
    min_steps: int | None  # None: the training default
    model: dict | None = None  # other model.* settings (sectors, pretrain)
    augment: str | None = None  # train.augment; None: the default
    tta: bool = False  # predictions averaged over the 8 rotations and flips
    shift_px: int = 0  # training patches also moved by up to this many pixels
    scope: str | None = None  # train.scope; None: the configuration's ("region")


VARIANTS = {
    "old": Variant("old default (label, 1 net, 20 epochs)", "label", 1, 0),
    "value": Variant("value target", "value", 1, 0),
    "value_steps": Variant("value, >= min_steps", "value", 1, None),
    "label_steps_members": Variant("label, >= min_steps, members", "label", None, None),
    "new": Variant("new default (value, >= min_steps, members)", "value", None, None),
    "pretrain": Variant("new + pretrained trunk", "value", None, None, {"pretrain": True}),
    "no_pretrain": Variant(
        "new without the pretrained trunk (session 3 default)",
        "value",
        None,
        None,
        {"pretrain": False},
    ),
    "sectors": Variant(
        "new + quadrant sectors, no rotation augmentation",
        "value",
        None,
        None,
        {"sectors": 4},
        "none",
    ),
    "tta": Variant("new + test-time rotations and flips", "value", None, None, tta=True),
    "sectors_tta": Variant(
        "new + quadrant sectors + test-time rotations and flips",
        "value",
        None,
        None,
        {"sectors": 4},
        tta=True,
    ),
    "pooled": Variant(
        "new, trained on all regions at once (train.scope pooled)",
        "value",
        None,
        None,
        scope="pooled",
    ),
    "noaug": Variant("new, no rotation augmentation", "value", None, None, None, "none"),
    "shift1": Variant("new + shifts of up to 1 px", "value", None, None, shift_px=1),
    "shift2": Variant("new + shifts of up to 2 px", "value", None, None, shift_px=2),
    "members5": Variant("new with 5 members", "value", 5, None),
    "sectors_aug": Variant(
        "new + quadrant sectors (rotations kept)", "value", None, None, {"sectors": 4}
    ),
    "steps_pretrain": Variant(
        "value, >= min_steps, 1 net, pretrained trunk", "value", 1, None, {"pretrain": True}
    ),
    "steps_sectors": Variant(
        "value, >= min_steps, 1 net, sectors, no rotations",
        "value",
        1,
        None,
        {"sectors": 4},
        "none",
    ),
}
"""SI-LICNet variants by name; ``new`` is what ``soilsource run`` does by default."""
POOLED = "@pooled"
"""Suffix of a baseline trained on all regions at once (``random_forest@pooled``): the
fair partner of the ``pooled`` variant, on the same pooled folds."""


def forest_for(variant: str) -> str:
    """The forest a variant is compared with: the one of its own training scope."""
    return FOREST + POOLED if VARIANTS[variant].scope == "pooled" else FOREST


def run_case(
    config: Config,
    dataset: Dataset,
    variants: list[str],
    baselines: list[str],
    design: str,
    seed: int,
) -> dict[str, dict[str, dict]]:
    """``{region: {model: {auc, proba, pred, seconds}}}`` of one case, design and seed."""
    config = config.model_copy(deep=True)
    config.train.cv, config.train.seed = design, seed
    base = train_settings(config)
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    runs = [(f"silicnet:{v}", VARIANTS[v]) for v in variants] + [(b, None) for b in baselines]
    for name, variant in runs:
        local = config.model_copy(deep=True)
        settings = base
        if (variant is not None and variant.scope == "pooled") or name.endswith(POOLED):
            local.train.scope = "pooled"
        if variant is not None:
            local.model.target = variant.target
            if variant.members is not None:
                local.model.members = variant.members
            if variant.min_steps is not None:
                settings = replace(base, min_steps=variant.min_steps)
            for key, value in (variant.model or {}).items():
                setattr(local.model, key, value)
            if variant.tta:
                settings = replace(settings, tta=True)
            if variant.shift_px:
                settings = replace(settings, shift_px=variant.shift_px)
            if variant.augment is not None:
                local.train.augment = variant.augment
                settings = replace(settings, augment=variant.augment == "dihedral")
        start = time.perf_counter()
        model = MODEL if variant is not None else name.removesuffix(POOLED)
        result = evaluate(
            dataset, local, settings=settings, models=[model], final=False, n_boot=10, device="cpu"
        )[model]
        seconds = time.perf_counter() - start
        for region in dataset:
            cv = region_result(result, region.name)
            proba, _ = oof(result, region, dataset)
            out[region.name][name] = {
                "auc": cv.regions[region.name].auc,
                "proba": proba,
                "pred": oof_values(result, region, dataset),
                "seconds": seconds / len(dataset.regions),
                "method": cv.design.get("method", cv.design.get("design")),
            }
    return dict(out)


def _subset(dataset: Dataset, regions: list[str] | None) -> Dataset:
    keep = [r for r in dataset.regions if not regions or r.name in regions]
    return Dataset(keep, dataset.rule, dataset.band_names, dataset.patch_px)


def collect(args: argparse.Namespace, work: Path) -> dict:
    """Every case's results: ``{(case, design, region): {model: [per seed]}}``."""
    # Pretrained trunks in a fresh cache: every run pays for its pretraining, in its seconds.
    os.environ["SOILSOURCE_CACHE"] = str(work / "pretrain-cache")
    rows: dict = defaultdict(lambda: defaultdict(list))
    ceilings: dict = defaultdict(lambda: defaultdict(list))
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        cases = []
        if args.only in (None, "synthetic"):
            city = work / f"city_{seed}"
            summary = write_city(city, seed=seed, size_px=cli.DEMO_CITY_PX)
            config = load_config(city / "config.yaml")
            config.patch.size_m = args.city_patch_m or cli.DEMO_PATCH_M
            config.train.folds = cli.DEMO_FOLDS
            if args.context_m is not None:
                config.patch.context_m = args.context_m
            for region, info in summary["regions"].items():
                for key in ("visible_oracle_auc", "oracle_auc"):
                    if info.get(key) is not None:
                        ceilings[region][key].append(info[key])
            cases.append(("synthetic", config))
        if args.only in (None, "meuse"):
            meuse = load_config(MEUSE)
            if args.patch_m:
                meuse.patch.size_m = args.patch_m
            if args.context_m is not None:
                meuse.patch.context_m = args.context_m
            cases.append(("meuse", meuse))
        for case, config in cases:
            dataset = _subset(load_dataset(config), args.regions)
            for design in args.designs:
                found = run_case(config, dataset, args.variants, args.baselines, design, seed)
                for region in dataset:
                    labels, values = region.labels, region.table["value"].to_numpy()
                    key = (case, design, region.name)
                    for name, r in found[region.name].items():
                        rows[key][name].append(r["auc"])
                        rows[key][f"{name}:seconds"].append(r["seconds"])
                        rows[key]["method"].append(r["method"])
                        if r["pred"] is not None:
                            rho = spearmanr(r["pred"], values).statistic
                            rows[key][f"{name}:rho"].append(float(rho))
                    for v in args.variants:
                        forest = found[region.name].get(forest_for(v))
                        if forest is None:
                            continue
                        mine = found[region.name][f"silicnet:{v}"]
                        diff = paired_auc_difference(
                            labels, mine["proba"], forest["proba"], n_boot=N_BOOT, seed=seed
                        )
                        if diff is not None:
                            rows[key][f"diff:{v}"].append(diff)
    return {"rows": rows, "ceilings": ceilings}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return statistics.mean(values) if values else None


def cell(values: list) -> str:
    """Mean ± sd of the finite values (one value alone; 'n/a' for none)."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def diff_cell(diffs: list) -> str:
    """Mean paired difference and interval over seeds, and how many seeds' lower end is > 0."""
    if not diffs:
        return "n/a"
    d, lo, hi = (statistics.mean(x[i] for x in diffs) for i in range(3))
    above = sum(x[1] > 0 for x in diffs)
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] ({above}/{len(diffs)})"


def tables(args: argparse.Namespace, found: dict) -> list[str]:
    rows, ceilings = found["rows"], found["ceilings"]
    models = [f"silicnet:{v}" for v in args.variants] + args.baselines
    heads = [VARIANTS[v].label for v in args.variants] + args.baselines
    lines = [
        f"Seeds: {args.first_seed} to {args.first_seed + args.seeds - 1}; designs: "
        f"{', '.join(args.designs)}. SI-LICNet variants: "
        + "; ".join(f"`{v}` = {VARIANTS[v].label}" for v in args.variants)
        + f". Defaults: {TrainSettings().max_epochs} epochs or at least "
        f"{TrainConfig().min_steps} steps (train.min_steps), model.members "
        f"{ModelConfig().members}. Meuse patch: "
        + (f"{args.patch_m:g} m (--patch-m)" if args.patch_m else "the example's")
        + f"; synthetic city: demo profile ({cli.DEMO_CITY_PX} px regions, "
        + (
            f"{args.city_patch_m:g} m patches (--city-patch-m)"
            if args.city_patch_m
            else f"{cli.DEMO_PATCH_M:g} m patches"
        )
        + f", {cli.DEMO_FOLDS} folds). Context bands "
        "(patch.context_m), for every model: "
        + (
            "the configuration's"
            if args.context_m is None
            else (", ".join(f"{m:g} m" for m in args.context_m) or "none") + " (--context-m)"
        )
        + ".",
        "",
    ]
    for design in args.designs:
        keys = sorted(k for k in rows if k[1] == design)
        lines += [
            f"### {design} CV: out-of-fold AUC, mean ± sd over seeds",
            "",
            "| case | region | "
            + " | ".join(heads)
            + " | new - forest, paired 95 % (seeds above 0) | visible oracle | oracle |",
            "|---|---|" + "---|" * (len(heads) + 3),
        ]
        ahead, gaps = 0, []
        for key in keys:
            case, _, region = key
            r = rows[key]
            cells = [cell(r.get(m, [])) for m in models]
            diffs = r.get("diff:new", [])
            paired = diff_cell(diffs)
            ahead += bool(diffs) and statistics.mean(x[0] for x in diffs) > 0
            vis = ceilings.get(region, {}).get("visible_oracle_auc", []) if case != "meuse" else []
            ora = ceilings.get(region, {}).get("oracle_auc", []) if case != "meuse" else []
            new = _mean(r.get("silicnet:new", []))
            if vis and new is not None:
                gaps.append(statistics.mean(vis) - new)
            lines.append(
                f"| {case} | {region} | " + " | ".join(cells) + f" | {paired} | "
                f"{cell(vis)} | {cell(ora)} |"
            )
        lines += [
            "",
            f"New default ahead of the forest (mean paired difference > 0) in {ahead} of "
            f"{len(keys)} rows."
            + (
                f" Synthetic city: visible oracle minus new default, mean over regions "
                f"{statistics.mean(gaps):+.3f}."
                if gaps
                else ""
            ),
            "",
            "Spearman's rho of the out-of-fold predicted median with the measured value, and "
            "cross-validation seconds per region (all folds; 2 cores):",
            "",
            "| case | region | "
            + " | ".join(f"{h} rho" for h in heads)
            + " | "
            + " | ".join(f"{h} s" for h in heads)
            + " |",
            "|---|---|" + "---|" * (2 * len(heads)),
        ]
        for key in keys:
            r = rows[key]
            rho = [cell(r.get(f"{m}:rho", [])) for m in models]
            sec = [f"{_mean(r.get(f'{m}:seconds', [])) or 0:.0f}" for m in models]
            lines.append(f"| {key[0]} | {key[2]} | " + " | ".join(rho + sec) + " |")
        if any(b.startswith(FOREST) for b in args.baselines) and len(args.variants) > 1:
            lines += [
                "",
                "Each SI-LICNet variant minus the forest of its training scope, on the same "
                "folds: paired-bootstrap "
                "difference, mean and 95 % interval over seeds (seeds whose interval lies "
                "above 0):",
                "",
                "| case | region | " + " | ".join(heads[: len(args.variants)]) + " |",
                "|---|---|" + "---|" * len(args.variants),
            ]
            for key in keys:
                cells = [diff_cell(rows[key].get(f"diff:{v}", [])) for v in args.variants]
                lines.append(f"| {key[0]} | {key[2]} | " + " | ".join(cells) + " |")
        methods = sorted({m for k in keys for m in rows[k].get("method", []) if m})
        lines += ["", f"Fold designs chosen: {', '.join(methods)}.", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds from this one on")
    parser.add_argument("--only", choices=("synthetic", "meuse"), default=None)
    parser.add_argument("--designs", default="knndm,buffered", help="comma-separated")
    parser.add_argument("--variants", default="old,value,value_steps,new", help="comma-separated")
    parser.add_argument("--baselines", default=FOREST, help="comma-separated")
    parser.add_argument("--regions", default="", help="synthetic regions (default all)")
    parser.add_argument("--patch-m", type=float, default=None, help="Meuse patch side (m)")
    parser.add_argument(
        "--city-patch-m", type=float, default=None, help="synthetic city's patch side (m)"
    )
    parser.add_argument(
        "--context-m",
        default=None,
        help="patch.context_m for every model of both cases: comma-separated metres, or "
        "'none' (default: the configuration's)",
    )
    args = parser.parse_args(argv)
    if args.context_m is not None:
        args.context_m = [float(m) for m in args.context_m.split(",") if m and m != "none"]
    args.designs = [d for d in args.designs.split(",") if d]
    args.variants = [v for v in args.variants.split(",") if v]
    args.baselines = [b for b in args.baselines.split(",") if b]
    args.regions = [r for r in args.regions.split(",") if r] or None
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_accuracy_") as work:
        print("\n".join(tables(args, collect(args, Path(work)))))
    print(f"Total {time.perf_counter() - start:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
