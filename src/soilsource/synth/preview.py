"""Preview pictures of a written synthetic city: look at what was generated.

One PNG per region with three panels: true-colour imagery, land use with the
samples (positives in black), and the sources over the anthropogenic
contribution. Rasters are read decimated to at most ``max_px`` pixels a side.

Run as ``python -m soilsource.synth.preview CITY_DIR OUT_DIR``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.enums import Resampling

from soilsource.atomic import atomic_path
from soilsource.synth.recipes import LandUse


def render_previews(
    city: str | os.PathLike[str], out: str | os.PathLike[str], max_px: int = 1000
) -> list[Path]:
    """Write ``out/REGION.png`` for every region of the city in ``city``; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap, LogNorm

    city, out = Path(city), Path(out)
    summary = json.loads((city / "truth" / "summary.json").read_text(encoding="utf-8"))
    samples = pd.read_csv(city / "truth" / "samples.csv")
    sources = gpd.read_file(city / "truth" / "sources.gpkg", layer="sources")
    classes = pd.read_csv(city / "landuse" / "classes.csv")
    with rasterio.open(city / "landuse" / f"{next(iter(summary['regions']))}.tif") as src:
        cmap = src.colormap(1)
    colours = [np.array(cmap.get(c, (0, 0, 0, 255))[:3]) / 255 for c in range(max(LandUse) + 1)]
    landuse_cmap = ListedColormap(colours)
    written = []
    for name, info in summary["regions"].items():
        rgb, extent = _read(city / "imagery" / f"{name}.tif", max_px, bands=(3, 2, 1))
        landuse, _ = _read(city / "landuse" / f"{name}.tif", max_px, nearest=True)
        contribution, _ = _read(city / "truth" / "contribution" / f"{name}.tif", max_px)
        rgb = np.clip(np.moveaxis(rgb, 0, -1) / 10000.0 / 0.25, 0, 1) ** 0.75
        fig, axes = plt.subplots(1, 3, figsize=(21, 7.6), sharex=True, sharey=True)
        axes[0].imshow(rgb, extent=extent)
        axes[0].set_title(f"{info['title']}: true colour (red, green, blue)")
        axes[1].imshow(
            landuse[0],
            extent=extent,
            cmap=landuse_cmap,
            vmin=0,
            vmax=len(colours) - 1,
            interpolation="nearest",
        )
        mine = samples[samples["region"] == name]
        for positive, marker in ((False, "o"), (True, "o")):
            sel = mine[mine["label"] == positive]
            axes[1].scatter(
                sel["x"],
                sel["y"],
                s=9,
                marker=marker,
                c="black" if positive else "white",
                edgecolors="black",
                linewidths=0.4,
            )
        axes[1].set_title(
            f"land use; samples (black: positive), n={info['n']}, n_pos={info['n_pos']}"
        )
        handles = [plt.Rectangle((0, 0), 1, 1, color=colours[c]) for c in classes["code"]]
        axes[1].legend(handles, classes["name"], loc="lower left", fontsize=7, framealpha=0.8)
        im = axes[2].imshow(
            np.maximum(contribution[0], 1e-3),
            extent=extent,
            cmap="magma",
            norm=LogNorm(vmin=0.005, vmax=2.0),
        )
        fig.colorbar(im, ax=axes[2], fraction=0.046, label="anthropogenic Cd, mg/kg")
        here = sources[sources["region"] == name]
        sites = here[here["type"] == "industrial_site"]
        sites.boundary.plot(ax=axes[2], color="cyan", linewidth=0.4)
        for kind, colour, marker in (("stack", "lime", "^"), ("effluent", "deepskyblue", "v")):
            pts = here[here["type"] == kind]
            axes[2].scatter(
                pts.geometry.x,
                pts.geometry.y,
                s=12,
                c=colour,
                marker=marker,
                label=f"{kind} ({len(pts)})",
                edgecolors="black",
                linewidths=0.3,
            )
        axes[2].legend(loc="lower left", fontsize=7)
        axes[2].set_title(f"sources; contribution; oracle AUC {info['oracle_auc']}")
        for ax in axes:
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
            ax.tick_params(labelsize=7)
        fig.tight_layout()
        target = out / f"{name}.png"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=72)
        plt.close(fig)
        written.append(target)
    return written


def _read(
    path: Path, max_px: int, bands: tuple[int, ...] | None = None, nearest: bool = False
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    with rasterio.open(path) as src:
        step = max(1, int(np.ceil(max(src.height, src.width) / max_px)))
        indexes = list(bands) if bands else list(range(1, src.count + 1))
        shape = (len(indexes), src.height // step, src.width // step)
        resampling = Resampling.nearest if nearest else Resampling.average
        data = src.read(indexes, out_shape=shape, resampling=resampling).astype(np.float32)
        left, bottom, right, top = src.bounds
    return data, (left, right, bottom, top)


if __name__ == "__main__":
    for written_path in render_previews(sys.argv[1], sys.argv[2]):
        print(written_path)
