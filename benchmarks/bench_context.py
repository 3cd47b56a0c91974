"""Context bands (``patch.context_m``): what seeing around the patch gives each model.

Per case, region and seed, SI-LICNet and the random forest are cross-validated on the same
folds (kNNDM, the default) with the imagery as it is and with the context bands of
:mod:`soilsource.data.context` at each set of scales (``--scales``); both models get the
same bands. Printed: out-of-fold AUC, mean ± sd over seeds, SI-LICNet minus the forest
(paired bootstrap, mean difference and mean interval over seeds, seeds whose interval
lies above 0), and for the synthetic city the mean over regions against the visible
oracle (``truth/summary.json``).

Cases: ``synthetic``, the demo's city and settings (``soilsource demo``: ``cli.DEMO_*``,
one network, no pretraining: the cheap profile, so that several seeds and scales fit in
minutes); ``meuse``, ``examples/meuse/config.yaml`` as shipped (three members, pretrained
trunk). The default profile's numbers with context are ``bench_accuracy`` with
``--context-m``.

Usage: ``python benchmarks/bench_context.py [--seeds N] [--scales "none;500;250,1000"]
[--only synthetic|meuse]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

# soilsource before torch: it sets OMP_WAIT_POLICY, which torch reads when it loads
# (bench_accuracy imports it first)
from bench_accuracy import cell, diff_cell
from soilsource import cli
from soilsource.config import load_config
from soilsource.data.dataset import load_dataset
from soilsource.learn.evaluation import paired_auc_difference
from soilsource.pipeline.runner import MODEL, evaluate, train_settings
from soilsource.synth import write_city

MEUSE = Path(__file__).resolve().parent.parent / "examples" / "meuse" / "config.yaml"
FOREST = "random_forest"
N_BOOT = 1000


def demo_config(city: Path):
    """The configuration ``soilsource demo`` runs on ``city``."""
    config = load_config(city / "config.yaml")
    cli.apply_demo_profile(config)
    return config


def collect(args, work: Path) -> tuple[dict, dict, dict]:
    """``{(case, region, scales): {model: [per seed]}}``, visible oracles, seconds."""
    os.environ["SOILSOURCE_CACHE"] = str(work / "cache")
    rows: dict = defaultdict(lambda: defaultdict(list))
    oracle: dict = defaultdict(list)
    seconds: dict = defaultdict(list)
    for seed in range(args.seeds):
        cases = []
        if args.only in (None, "synthetic"):
            summary = write_city(work / f"city_{seed}", seed=seed, size_px=cli.DEMO_CITY_PX)
            for region, info in summary["regions"].items():
                oracle[region].append(info["visible_oracle_auc"])
            cases.append(("synthetic", demo_config(work / f"city_{seed}")))
        if args.only in (None, "meuse"):
            cases.append(("meuse", load_config(MEUSE)))
        for case, config in cases:
            for scales in args.scales:
                local = config.model_copy(deep=True)
                local.patch.context_m, local.train.seed = list(scales), seed
                dataset = load_dataset(local)
                start = time.perf_counter()
                result = evaluate(
                    dataset,
                    local,
                    settings=train_settings(local),
                    models=[MODEL, FOREST],
                    final=False,
                    n_boot=10,
                    device="cpu",
                )
                seconds[(case, scales)].append(time.perf_counter() - start)
                for region in dataset:
                    net, forest = result[MODEL][region.name], result[FOREST][region.name]
                    key = (case, region.name, scales)
                    rows[key]["net"].append(net.regions[region.name].auc)
                    rows[key]["forest"].append(forest.regions[region.name].auc)
                    diff = paired_auc_difference(
                        region.labels, net.proba, forest.proba, n_boot=N_BOOT, seed=seed
                    )
                    if diff is not None:
                        rows[key]["diff"].append(diff)
    return rows, oracle, seconds


def _name(scales: tuple[float, ...]) -> str:
    return ", ".join(f"{s:g} m" for s in scales) if scales else "none"


def tables(args, rows: dict, oracle: dict, seconds: dict) -> list[str]:
    names = [_name(s) for s in args.scales]
    lines = [
        f"Seeds 0 to {args.seeds - 1}; kNNDM CV; context scales (patch.context_m): "
        + "; ".join(names)
        + ". Synthetic city: the demo's settings (one network, no pretraining); Meuse: the "
        "example's config as shipped.",
        "",
        "### Out-of-fold AUC, mean ± sd over seeds, and SI-LICNet minus the forest",
        "",
        "| case | region | "
        + " | ".join(f"SI-LICNet, {n} | forest, {n} | SI-LICNet - forest, {n}" for n in names)
        + " | visible oracle |",
        "|---|---|" + "---|" * (3 * len(names) + 1),
    ]
    keys = sorted({(c, r) for c, r, _ in rows})
    for case, region in keys:
        cells = []
        for scales in args.scales:
            found = rows.get((case, region, scales), {})
            cells += [
                cell(found.get("net", [])),
                cell(found.get("forest", [])),
                diff_cell(found.get("diff", [])),
            ]
        ceiling = cell(oracle[region]) if case == "synthetic" else "n/a"
        lines.append(f"| {case} | {region} | " + " | ".join(cells) + f" | {ceiling} |")
    lines.append("")
    synthetic = sorted({r for c, r in keys if c == "synthetic"})
    if synthetic:
        lines += ["Synthetic city, mean over regions and seeds:", ""]
        visible = statistics.mean(v for r in synthetic for v in oracle[r])
        for scales, name in zip(args.scales, names, strict=True):
            net = [v for r in synthetic for v in rows[("synthetic", r, scales)]["net"]]
            forest = [v for r in synthetic for v in rows[("synthetic", r, scales)]["forest"]]
            ahead = sum(
                statistics.mean(x[0] for x in rows[("synthetic", r, scales)]["diff"]) > 0
                for r in synthetic
            )
            lines.append(
                f"- context {name}: SI-LICNet {statistics.mean(net):.3f}, forest "
                f"{statistics.mean(forest):.3f}, visible oracle {visible:.3f} (SI-LICNet "
                f"{visible - statistics.mean(net):+.3f} below it); SI-LICNet ahead of the "
                f"forest (mean paired difference > 0) in {ahead} of {len(synthetic)} regions."
            )
        lines.append("")
    lines += ["Cross-validation seconds (both models, all regions; mean over seeds):", ""]
    for (case, scales), values in sorted(seconds.items()):
        lines.append(f"- {case}, context {_name(scales)}: {statistics.mean(values):.0f} s")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scales", default="none;500;250,1000", help="';'-separated sets")
    parser.add_argument("--only", choices=("synthetic", "meuse"), default=None)
    args = parser.parse_args(argv)
    args.scales = [
        tuple(float(m) for m in part.split(",") if m and m != "none")
        for part in args.scales.split(";")
    ]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_context_") as work:
        rows, oracle, seconds = collect(args, Path(work))
        print("\n".join(tables(args, rows, oracle, seconds)))
    print(f"\nTotal {time.perf_counter() - start:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
