"""Does the Meuse sensitivity map rediscover the known answer (floodwater brought the Cd)?

From a run of ``examples/meuse/config.yaml``, prints mean occlusion sensitivity

- by flooding-frequency class (``zones.tif`` band 1: 1 = flooded about once in 2 years,
  2 = once in 10 years, 3 = once in 50 years), and
- by distance to the river (pixel centres to the ``river.geojson`` polygon, in metres),
  in fixed bands and as the near half vs the far half of the covered floodplain,

over the covered floodplain pixels (``ffreq > 0`` and a sensitivity value), plus the
pixel-level Spearman correlation of sensitivity with distance. The measured Cd of the
samples in the same groupings is printed beside it as the reference. The known answer:
highest near the river and on often-flooded land.

Usage::

    soilsource run examples/meuse/config.yaml --out meuse-run
    python examples/meuse/analyze_sensitivity.py meuse-run
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from scipy import stats

HERE = Path(__file__).resolve().parent
DISTANCE_BANDS_M = (0.0, 200.0, 500.0, 1000.0, np.inf)


def river_distance(transform, shape: tuple[int, int], river: shapely.Geometry) -> np.ndarray:
    """Distance (m) from each pixel centre of the grid to the river polygon (0 inside)."""
    rows, cols = np.indices(shape)
    xs, ys = rasterio.transform.xy(transform, rows.ravel(), cols.ravel(), offset="center")
    points = shapely.points(np.asarray(xs), np.asarray(ys))
    return shapely.distance(points, river).reshape(shape)


def band_labels(edges: tuple[float, ...]) -> list[str]:
    """Names of the distance bands, e.g. ``0-200 m`` and ``>= 1000 m``."""
    names = [f"{lo:g}-{hi:g} m" for lo, hi in itertools.pairwise(edges[:-1])]
    return [*names, f">= {edges[-2]:g} m"]


def grouped(values: np.ndarray, groups: np.ndarray, names: dict) -> pd.DataFrame:
    """Count, mean and median of ``values`` per group, in the order of ``names``."""
    rows = []
    for key, name in names.items():
        pick = groups == key
        v = values[pick]
        rows.append(
            {
                "group": name,
                "n": int(pick.sum()),
                "mean": float(v.mean()) if v.size else np.nan,
                "median": float(np.median(v)) if v.size else np.nan,
            }
        )
    return pd.DataFrame(rows)


def analyze(run_dir: Path, data_dir: Path = HERE) -> dict[str, pd.DataFrame]:
    """Tables of sensitivity and of measured Cd by flood class and by river distance."""
    with rasterio.open(run_dir / "sensitivity" / "all.tif") as src:
        sensitivity = src.read(1, masked=True).astype(np.float64).filled(np.nan)
        transform, shape = src.transform, src.shape
    with rasterio.open(data_dir / "zones.tif") as src:
        ffreq = src.read(1)
    classes = pd.read_csv(data_dir / "ffreq_classes.csv")
    class_names = dict(zip(classes["code"].astype(int), classes["name"], strict=True))
    river = gpd.read_file(data_dir / "river.geojson").to_crs(28992).union_all()
    distance = river_distance(transform, shape, river)

    covered = np.isfinite(sensitivity) & (ffreq > 0)
    s, d, f = sensitivity[covered], distance[covered], ffreq[covered]
    band = np.digitize(d, DISTANCE_BANDS_M[1:-1])
    band_names = dict(enumerate(band_labels(DISTANCE_BANDS_M)))
    median_d = float(np.median(d))
    half_names = {0: f"near half (< {median_d:.0f} m)", 1: f"far half (>= {median_d:.0f} m)"}

    samples = pd.read_csv(data_dir / "samples.csv")
    rows, cols = rasterio.transform.rowcol(transform, samples["x"], samples["y"])
    sample_d = distance[np.asarray(rows), np.asarray(cols)]
    cd = samples["cadmium"].to_numpy(dtype=np.float64)
    sample_f = samples["ffreq"].to_numpy()

    def both(pixel_groups, sample_groups, names) -> pd.DataFrame:
        a = (
            grouped(s, pixel_groups, names)
            .add_prefix("sens_")
            .rename(columns={"sens_group": "group"})
        )
        b = grouped(cd, sample_groups, names).add_prefix("cd_").drop(columns="cd_group")
        return pd.concat([a, b], axis=1)

    rho_s = stats.spearmanr(s, d).statistic
    rho_cd = stats.spearmanr(cd, sample_d).statistic
    correlation = pd.DataFrame(
        [
            {"what": "sensitivity of covered floodplain pixels", "n": s.size, "spearman": rho_s},
            {"what": "measured Cd of the samples", "n": cd.size, "spearman": rho_cd},
        ]
    )
    return {
        "by flooding frequency": both(f, sample_f, class_names),
        "by distance to the river": both(
            band, np.digitize(sample_d, DISTANCE_BANDS_M[1:-1]), band_names
        ),
        "near vs far": both((d >= median_d).astype(int), (sample_d >= median_d), half_names),
        "spearman with distance to the river": correlation,
    }


def markdown(frame: pd.DataFrame) -> str:
    """A small frame as a markdown table (numbers to 4 significant digits)."""
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + " --- |" * len(frame.columns)
    body = [
        "| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([head, rule, *body])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run directory of examples/meuse/config.yaml")
    args = parser.parse_args(argv)
    for title, table in analyze(args.run_dir).items():
        print(f"\n### {title}\n")
        print(markdown(table))


if __name__ == "__main__":
    main()
