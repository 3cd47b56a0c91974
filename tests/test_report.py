"""report.html: built from a run directory, self-contained, escaped, and sound in a browser."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

from soilsource.cli import main
from soilsource.config import load_config
from soilsource.errors import InputError
from soilsource.learn.training import TrainSettings
from soilsource.pipeline.runner import run
from soilsource.report.document import REPORT_FILE, write_report
from soilsource.rundir import is_complete

FAST = TrainSettings(max_epochs=1, batch_size=16, patience=1)
REGIONS = ("industrial_town", "river_paddies")
SECTIONS = (
    "findings",
    "inputs",
    "accuracy",
    "roc",
    "maps",
    "candidates",
    "landuse",
    "method",
    "configuration",
    "provenance",
)
EVIL_REGION = "<script>alert(1)</script>"
EVIL_CLASS = "<img src=x onerror=alert(2)>"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def run_dir(small_city, tmp_path_factory) -> Path:
    """One cheap pipeline run whose report the tests read.

    Two regions of the small city, 320 m patches, 2 folds, 1 epoch: a report needs
    every output, not a good model.
    """
    tmp = tmp_path_factory.mktemp("report_run")
    raw = load_config(small_city / "config.yaml").model_dump(mode="json")
    samples = pd.read_csv(raw["samples"]["path"])
    samples = samples[samples["region"].isin(REGIONS)]
    samples.to_csv(tmp / "samples.csv", index=False)
    raw["samples"]["path"] = str(tmp / "samples.csv")
    raw["patch"]["size_m"] = 320.0
    raw["model"]["pretrain_steps"] = 10  # the pretraining runs, briefly
    raw["explain"].update(window_m=80.0, stride_m=40.0)
    raw["train"]["folds"] = 2
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    return run(config, tmp / "out", settings=FAST, device="cpu").out


def _copy(run_dir: Path, dest: Path, keep: tuple[str, ...] | None = None) -> Path:
    """A copy of the run directory (or of the ``keep`` entries only), without the old report."""
    dest.mkdir(parents=True)
    for entry in run_dir.iterdir():
        if entry.name in ("models", REPORT_FILE) or (keep is not None and entry.name not in keep):
            continue
        (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, dest / entry.name)
    return dest


def _html(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.mark.slow
def test_pipeline_writes_a_complete_report(run_dir):
    assert is_complete(run_dir)
    html = _html(run_dir / REPORT_FILE)
    for section in SECTIONS:
        assert f'<section id="{section}">' in html, section
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for region, entry in metrics["regions"].items():
        assert f"<td>{region}</td>" in html
        if entry["auc"] is not None:
            assert f"{entry['auc']:.3f}" in html
    # One map per region, each with imagery, both overlays, samples and the opacity slider.
    assert html.count('<article class="map') == len(metrics["regions"])
    assert html.count('class="base" src="data:image/jpeg;base64,') == len(metrics["regions"])
    assert html.count('data-overlay="sensitivity"') == len(metrics["regions"])
    assert html.count('data-overlay="probability"') == len(metrics["regions"])
    assert html.count('data-control="opacity"') == len(metrics["regions"])
    n_samples = len(pd.read_csv(run_dir / "predictions.csv"))
    assert html.count("<circle ") == n_samples
    # The land-use ranking and the geodetector q of every region; the config; versions.
    landuse = pd.read_csv(run_dir / "landuse_sensitivity.csv")
    assert html.count("<caption>") >= landuse["region"].nunique()
    assert "Geographical detector q" in html
    assert "train:" in html and "torch" in html and "rasterio" in html
    assert "kNNDM cross-validation" in html and "Optimistic" not in html
    assert "none (patch.context_m: [])" in html  # the context bands, said
    assert "typical pixels of the clean samples" in html  # what fills the windows


@pytest.mark.slow
def test_report_is_self_contained(run_dir):
    html = _html(run_dir / REPORT_FILE)
    sources = re.findall(r'\s(?:src|href)="([^"]*)"', html)
    assert sources, "the report has images"
    assert all(s.startswith(("data:", "#")) for s in sources), {s[:40] for s in sources}
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert re.search(r"<script[^>]*\ssrc=", html) is None
    assert "Content-Security-Policy" in html
    # Maps are decimated PNGs: the whole report of six 128 px regions stays small.
    assert (run_dir / REPORT_FILE).stat().st_size < 3_000_000


@pytest.mark.slow
def test_text_from_inputs_is_escaped(run_dir, tmp_path):
    out = _copy(run_dir, tmp_path / "evil")
    region = json.loads((out / "metrics.json").read_text())["regions"]
    first = next(iter(region))
    text = (out / "metrics.json").read_text().replace(f'"{first}"', json.dumps(EVIL_REGION))
    (out / "metrics.json").write_text(text)
    for name in ("predictions.csv", "landuse_sensitivity.csv", "geodetector.csv"):
        frame = pd.read_csv(out / name)
        frame["region"] = frame["region"].replace(first, EVIL_REGION)
        if "class" in frame:
            frame.loc[0, "class"] = EVIL_CLASS
            frame.loc[0, "region"] = EVIL_REGION
        frame.to_csv(out / name, index=False)
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["samples"]["id"] = "<b>id</b>"
    (out / "config.yaml").write_text(yaml.safe_dump(config))

    html = _html(write_report(out))
    assert EVIL_REGION not in html and EVIL_CLASS not in html and "<b>id</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "&lt;b&gt;id&lt;/b&gt;" in html
    assert html.count("<script") == 1  # the report's own script only
    # The renamed region has no ROC figure or rasters under its new name: said, not hidden.
    assert "no imagery, sensitivity or probability raster" in html


@pytest.mark.slow
def test_missing_optional_outputs_are_reported(run_dir, tmp_path):
    out = _copy(run_dir, tmp_path / "bare", keep=("config.yaml", "metrics.json"))
    html = _html(write_report(out))
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    assert "Not in this run directory" in html
    for name in ("predictions.csv", "hotspots.gpkg", "sensitivity", "probability"):
        assert name in html
    assert "No ROC figures" in html
    assert "No land-use statistics" in html
    assert "no timings in run.json" in html
    # Without sensitivity or probability rasters the maps still show imagery.
    assert 'class="base" src="data:image/jpeg' in html
    assert 'data-overlay="sensitivity"' not in html


@pytest.mark.slow
def test_no_landuse_configured(run_dir, tmp_path):
    out = _copy(run_dir, tmp_path / "nolanduse")
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["landuse"] = None
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    (out / "landuse_sensitivity.csv").unlink()
    html = _html(write_report(out))
    assert "No land-use map was configured" in html


@pytest.mark.slow
def test_optimistic_and_null_auc_are_labelled(run_dir, tmp_path):
    out = _copy(run_dir, tmp_path / "random", keep=("config.yaml", "metrics.json"))
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.update(cv="random", optimistic=True)
    first = next(iter(metrics["regions"].values()))
    first.update(auc=None, auc_ci95=None, auc_null_reason="one class only (all 0)")
    (out / "metrics.json").write_text(json.dumps(metrics))
    html = _html(write_report(out))
    assert "<strong>Optimistic:</strong>" in html
    assert html.count('<span class="tag">optimistic</span>') == 1 + len(
        next(iter(metrics["regions"].values()))["baselines"]
    )
    assert 'n/a<br><span class="reason">one class only (all 0)</span>' in html


@pytest.mark.slow
def test_a_region_without_skill_is_greyed_with_its_reason(run_dir, tmp_path):
    out = _copy(run_dir, tmp_path / "skill")
    metrics = json.loads((out / "metrics.json").read_text())
    first, second = list(metrics["regions"])
    metrics["regions"][first].update(skill=False, skill_reason="AUC 0.42, interval [0.31, 0.53]")
    metrics["regions"][second]["skill"] = True
    metrics["regions"][second].pop("skill_reason", None)
    (out / "metrics.json").write_text(json.dumps(metrics))
    html = _html(write_report(out))
    assert html.count('<article class="map noskill"') == 1
    assert html.count("AUC 0.42, interval [0.31, 0.53]") >= 2  # in the findings and on the map
    assert '<section id="findings">' in html and "Reliability" in html
    assert "test patches overlapping training" in html


def test_not_a_run_directory(tmp_path, capsys):
    with pytest.raises(InputError, match=r"config\.yaml"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a soilsource run directory" in err[0]
    (tmp_path / "config.yaml").write_text("samples: [")
    assert main(["report", str(tmp_path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_cli_rebuilds_the_report(run_dir, tmp_path, capsys):
    out = _copy(run_dir, tmp_path / "again")
    assert not (out / REPORT_FILE).exists()
    assert main(["report", str(out)]) == 0
    assert str(out / REPORT_FILE) in capsys.readouterr().out.replace("\n", "")
    assert '<section id="maps">' in _html(out / REPORT_FILE)


# --- in a real browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium with a fresh profile, recording console and network events."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if not CHROMIUM.exists() or not Path(CHROMEDRIVER).exists():
        pytest.skip("chromium/chromedriver not installed (.ci/run installs them in CI)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="soilsource-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1280,1600",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
def test_report_in_headless_chromium(run_dir, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    url = (run_dir / REPORT_FILE).resolve().as_uri()
    browser.get_log("performance")  # drop the events of the start page
    browser.get(url)
    assert browser.execute_script("return document.readyState") == "complete"

    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []

    requests = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            params = message["params"]
            requests.append((params.get("documentURL", ""), params["request"]["url"]))
    ours = [u for doc, u in requests if doc == url]
    assert url in ours and len(ours) > 1  # the page and its data: images
    assert all(u.startswith(("file:", "data:")) for u in ours), {u[:40] for u in ours}
    assert not [u for _, u in requests if u.startswith(("http:", "https:", "ws:", "wss:"))]

    # The first map's controls work: choosing "probability" swaps overlay and legend.
    first = browser.find_element(By.CSS_SELECTOR, "article.map")
    sensitivity = first.find_element(By.CSS_SELECTOR, 'img[data-overlay="sensitivity"]')
    probability = first.find_element(By.CSS_SELECTOR, 'img[data-overlay="probability"]')
    assert sensitivity.is_displayed() and not probability.is_displayed()
    browser.execute_script("arguments[0].scrollIntoView()", first)
    first.find_element(By.CSS_SELECTOR, 'input[value="probability"]').click()
    assert probability.is_displayed() and not sensitivity.is_displayed()
    browser.execute_script(
        "const s = arguments[0]; s.value = 20;"
        " s.dispatchEvent(new Event('input', {bubbles: true}))",
        first.find_element(By.CSS_SELECTOR, 'input[data-control="opacity"]'),
    )
    assert float(probability.value_of_css_property("opacity")) == pytest.approx(0.2)
    first.find_element(By.CSS_SELECTOR, 'input[data-toggle="samples"]').click()
    assert not first.find_element(By.CSS_SELECTOR, 'g[data-layer="samples"]').is_displayed()

    # under an overlay the imagery turns grey, so the overlay's colours read true
    base = first.find_element(By.CSS_SELECTOR, "img.base")
    assert "grayscale(1)" in base.value_of_css_property("filter")
    first.find_element(By.CSS_SELECTOR, 'input[value="none"]').click()
    assert base.value_of_css_property("filter") == "none"
    for furniture in (".north", ".scalebar", ".tick.x", ".tick.y"):
        assert first.find_element(By.CSS_SELECTOR, furniture).is_displayed(), furniture

    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape[0] > 500 and pixels.std() > 10, "blank screenshot"


@pytest.mark.slow
def test_maps_carry_coordinates_scale_north_rule_and_reference_layers(run_dir, tmp_path):
    out = _copy(run_dir, tmp_path / "reference")
    config = yaml.safe_load((out / "config.yaml").read_text())
    with rasterio.open(out / "probability" / f"{REGIONS[0]}.tif") as src:
        left, bottom, right, top = src.bounds
    import geopandas as gpd
    import shapely

    canal = shapely.LineString([(left - 500, bottom), (right + 500, top)])  # beyond the map
    gpd.GeoDataFrame({"name": ["canal"]}, geometry=[canal], crs=32649).to_file(
        tmp_path / "canal.geojson"
    )
    config["report"] = {"reference": [str(tmp_path / "canal.geojson")]}
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    html = _html(write_report(out))
    first = html[html.index('<article class="map') : html.index("</article>")]
    assert re.search(r'<g data-layer="reference" class="reference">\s*<path d="M0\.0,', first)
    assert "canal (reference)" in first
    assert "Coordinates: EPSG:32649 (WGS 84 / UTM zone 49N), metre" in first
    assert 'class="north"' in first and 'class="scalebar"' in first
    assert len(re.findall(r'class="tick x"', first)) >= 2
    assert "Rule: Cd value &gt;" in first  # the rule the probability refers to
    assert 'data-overlay="concentration"' in first  # the predicted median, mg/kg


@pytest.mark.slow
def test_relative_aggregation_is_explained(run_dir, tmp_path):
    out = _copy(run_dir, tmp_path / "relative", keep=("config.yaml", "metrics.json"))
    html = _html(write_report(out))  # the default: weighted by the measured exceedance
    assert "aggregation: relative" not in html
    assert "<code>explain.aggregation: exceedance</code>" in html
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["explain"]["aggregation"] = "relative"
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    assert "<code>explain.aggregation: relative</code>" in _html(write_report(out))


@pytest.mark.slow
def test_imagery_from_a_list_matches_each_regions_grid(run_dir, tmp_path):
    out = _copy(run_dir, tmp_path / "list")
    template = _html(write_report(out))
    config = yaml.safe_load((out / "config.yaml").read_text())
    rasters = [config["imagery"]["path"].replace("{region}", r) for r in reversed(REGIONS)]
    config["imagery"]["path"] = rasters  # outputs are still named by region
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    listed = _html(write_report(out))
    images = [re.findall(r'class="base" src="([^"]+)"', html) for html in (template, listed)]
    assert len(images[0]) == len(REGIONS) and images[0] == images[1]
