"""Tiny, valid soilsource inputs written with rasterio into a temporary directory.

Shared by the tests of config, inputs, patches and check. Every test that needs
a bad input starts from these and breaks one thing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import yaml
from pyproj import Transformer
from rasterio.transform import from_origin

CRS_UTM = "EPSG:32649"  # UTM 49N, like the synthetic city
ORIGIN = (500_000.0, 2_500_640.0)  # top-left corner, metres
PIXEL_M = 10.0
SIZE = 64  # pixels per side
BAND_NAMES = ("blue", "red", "nir")


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str = CRS_UTM,
    origin: tuple[float, float] = ORIGIN,
    pixel: float = PIXEL_M,
    nodata: float | None = None,
    descriptions: tuple[str, ...] | None = None,
    block: int = 16,
    scales: tuple[float, ...] | None = None,
    offsets: tuple[float, ...] | None = None,
) -> Path:
    """Write ``data`` (bands, rows, cols) as a tiled GeoTIFF."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": from_origin(*origin, pixel, pixel),
        "nodata": nodata,
    }
    if data.shape[1] % block == 0 and data.shape[2] % block == 0:
        profile |= {"tiled": True, "blockxsize": block, "blockysize": block}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = descriptions
        if scales:
            dst.scales = scales
        if offsets:
            dst.offsets = offsets
    return path


def imagery_data(seed: int = 0) -> np.ndarray:
    """3 bands of uint16 with a nodata (0) square in the corner."""
    rng = np.random.default_rng(seed)
    data = rng.integers(100, 4000, size=(3, SIZE, SIZE), dtype=np.uint16)
    data[:, :8, :8] = 0
    return data


def landuse_data() -> np.ndarray:
    """Codes 1-3 in vertical stripes, 0 (no class) in the top row."""
    codes = np.repeat(np.array([1, 2, 3, 3], dtype=np.uint8), SIZE // 4)[None, :].repeat(SIZE, 0)
    codes[0, :] = 0
    return codes


def sample_table(n: int = 20, seed: int = 0) -> pd.DataFrame:
    """Samples inside the raster (away from the nodata corner), in longitude/latitude."""
    rng = np.random.default_rng(seed)
    x = ORIGIN[0] + rng.uniform(12, SIZE - 2, n) * PIXEL_M
    y = ORIGIN[1] - rng.uniform(12, SIZE - 2, n) * PIXEL_M
    lon, lat = Transformer.from_crs(CRS_UTM, "EPSG:4326", always_xy=True).transform(x, y)
    value = np.round(np.linspace(0.05, 1.0, n), 3)
    return pd.DataFrame(
        {
            "sample_id": [f"S{i:03d}" for i in range(n)],
            "lon": lon,
            "lat": lat,
            "cd_mgkg": value,
            "ph": np.round(np.linspace(4.5, 8.5, n), 2),
            "is_paddy": np.arange(n) % 2 == 0,
            "region": np.where((np.arange(n) // 2) % 2 == 0, "r1", "r2"),
        }
    )


def write_project(root: Path, *, template: bool = False, **overrides) -> Path:
    """A complete, valid project (samples, imagery, land use, config.yaml); returns the config.

    ``overrides`` replace top-level sections of the configuration.
    """
    root.mkdir(parents=True, exist_ok=True)
    sample_table().to_csv(root / "samples.csv", index=False)
    if template:
        for k, region in enumerate(("r1", "r2")):
            write_raster(
                root / "imagery" / f"{region}.tif",
                imagery_data(k),
                nodata=0,
                descriptions=BAND_NAMES,
            )
        imagery = {"path": "imagery/{region}.tif"}
    else:
        write_raster(root / "imagery.tif", imagery_data(), nodata=0, descriptions=BAND_NAMES)
        imagery = {"path": "imagery.tif"}
    write_raster(root / "landuse.tif", landuse_data(), nodata=0)
    (root / "classes.csv").write_text("code,name\n1,industrial\n2,paddy\n3,forest\n")
    config = {
        "metal": "Cd",
        "samples": {
            "path": "samples.csv",
            "x": "lon",
            "y": "lat",
            "crs": "EPSG:4326",
            "value": "cd_mgkg",
            "region": "region",
            "id": "sample_id",
            "ph": "ph",
            "paddy": "is_paddy",
        },
        "imagery": imagery,
        "landuse": {"path": "landuse.tif", "classes": "classes.csv"},
        "label": {"rule": "threshold", "threshold": 0.5},
        "patch": {"size_m": 160},
        "train": {"folds": 2},
    }
    config.update(overrides)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with size and mtime (to show that nothing was written)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


CLAIMER = """
import sys
from soilsource.rundir import claim
with claim(sys.argv[1]):
    print("ready", flush=True)
    sys.stdin.read()
"""


def claiming_process(out: Path) -> subprocess.Popen:
    """Another soilsource process holding ``out`` (as a run in progress does) until its
    stdin is closed: the real ``rundir.claim``, in a process of its own."""
    holder = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    return holder
