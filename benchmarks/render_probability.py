"""Render a region's probability map beside the synthetic city's true contribution map.

The picture behind ``docs/images/probability_vs_truth.png``: the imagery (true colour), the
probability map a run wrote (``probability/REGION.tif``) with the samples on top (filled:
above the rule), and the truth (``city/truth/contribution/REGION.tif``, the anthropogenic
Cd increment). It also prints, for every region of the run, the Spearman correlation between
the mapped probability and the true contribution over all pixels with a value, so the one
region shown can be read against the others.

Usage: ``python benchmarks/render_probability.py RUN_DIR [--region NAME] [--out PNG]``
(``RUN_DIR`` from ``soilsource demo --out RUN_DIR``; the city is ``RUN_DIR/city``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import rasterio
from scipy.stats import spearmanr

from soilsource.atomic import atomic_path

DOCS_PNG = Path(__file__).resolve().parents[1] / "docs" / "images" / "probability_vs_truth.png"


def read(path: Path) -> tuple[np.ndarray, rasterio.Affine]:
    with rasterio.open(path) as src:
        return src.read(masked=True).astype(np.float32).filled(np.nan), src.transform


def correlations(run: Path) -> pd.DataFrame:
    """Spearman rho of probability vs true contribution, per region, over mapped pixels."""
    rows = []
    for path in sorted((run / "probability").glob("*.tif")):
        prob = read(path)[0][0]
        truth = read(run / "city" / "truth" / "contribution" / path.name)[0][0]
        ok = np.isfinite(prob) & np.isfinite(truth)
        rho = spearmanr(prob[ok], truth[ok]).statistic if ok.sum() > 2 else np.nan
        rows.append({"region": path.stem, "pixels": int(ok.sum()), "spearman_rho": rho})
    return pd.DataFrame(rows)


def render(run: Path, region: str, out: Path) -> None:
    city = run / "city"
    image, transform = read(city / "imagery" / f"{region}.tif")
    prob = read(run / "probability" / f"{region}.tif")[0][0]
    truth = read(city / "truth" / "contribution" / f"{region}.tif")[0][0]
    rgb = np.stack([image[2], image[1], image[0]], axis=-1)
    lo, hi = np.nanpercentile(rgb, [2, 98])
    rgb = np.clip((rgb - lo) / (hi - lo), 0, 1)
    samples = pd.read_csv(run / "predictions.csv")
    samples = samples[samples["region"] == region]
    cols, rows = ~transform * (samples["x"].to_numpy(), samples["y"].to_numpy())
    positive = samples["label"].to_numpy().astype(bool)

    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), constrained_layout=True)
    axes[0].imshow(rgb)
    axes[0].set_title(f"{region}: imagery (red, green, blue)")
    vmin, vmax = np.nanpercentile(prob, [1, 99])
    shown = axes[1].imshow(prob, cmap="magma", vmin=vmin, vmax=vmax)
    axes[1].scatter(cols[~positive], rows[~positive], s=14, facecolors="none", edgecolors="c")
    axes[1].scatter(cols[positive], rows[positive], s=14, c="c", edgecolors="k", linewidths=0.4)
    axes[1].set_title("mapped probability of exceeding the rule\n(samples: filled = above)")
    fig.colorbar(shown, ax=axes[1], shrink=0.8, label="probability (1st-99th percentile)")
    shown = axes[2].imshow(np.log10(np.maximum(truth, 1e-3)), cmap="magma")
    axes[2].set_title("truth: anthropogenic Cd increment")
    fig.colorbar(shown, ax=axes[2], shrink=0.8, label="log10 mg/kg")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--region", default="industrial_town")
    parser.add_argument("--out", type=Path, default=DOCS_PNG)
    args = parser.parse_args(argv)
    table = correlations(args.run)
    print("| region | mapped pixels | Spearman rho, probability vs true contribution |")
    print("|---|---:|---:|")
    for row in table.itertuples():
        print(f"| {row.region} | {row.pixels:,} | {row.spearman_rho:.2f} |")
    render(args.run, args.region, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
