"""`soilsource check`: the summary, and every bad input of issue 3 item 8 as one line, exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

from soilsource.cli import main
from soilsource.errors import InputError
from soilsource.pipeline.check import check
from tinyinputs import (
    ORIGIN,
    PIXEL_M,
    imagery_data,
    landuse_data,
    snapshot,
    write_project,
    write_raster,
)

MEUSE = Path(__file__).resolve().parents[1] / "examples" / "meuse" / "config.yaml"


def run_check(config: Path, capsys) -> tuple[int, str, str]:
    """main(['check', config]) with its exit code, stdout and stderr; asserts nothing is written."""
    before = snapshot(config.parent)
    code = main(["check", str(config)])
    out, err = capsys.readouterr()
    assert snapshot(config.parent) == before, "check wrote or changed a file"
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("soilsource: error: ")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def edit_config(config: Path, change) -> None:
    raw = yaml.safe_load(config.read_text())
    change(raw)
    config.write_text(yaml.safe_dump(raw, sort_keys=False))


def edit_samples(config: Path, change) -> None:
    table = pd.read_csv(config.parent / "samples.csv", dtype=str)
    change(table)
    table.to_csv(config.parent / "samples.csv", index=False)


# --- what check shows -----------------------------------------------------------------


def test_meuse_example_counts(capsys):
    code, out, err = run_check(MEUSE, capsys)
    assert code == 0, err
    assert "155 samples, 78 positive" in out
    assert out.count("EPSG:28992") == 5  # samples, imagery, land use, study area, river
    assert "40 x 40" in out
    summary = check(MEUSE)
    assert (summary.n, summary.n_pos) == (155, 78)
    assert summary.regions[0].n_outside == 0
    assert summary.regions[0].patch_px == [40]


def test_tiny_project_summary(tmp_path, capsys):
    config = write_project(tmp_path)
    code, out, err = run_check(config, capsys)
    assert code == 0, err
    summary = check(config)
    assert [r.name for r in summary.regions] == ["r1", "r2"]
    values = pd.read_csv(tmp_path / "samples.csv")
    assert summary.n == len(values)
    assert summary.n_pos == int((values["cd_mgkg"] > 0.5).sum())
    assert summary.regions[0].patch_px == [16]  # 160 m of 10 m pixels
    assert "EPSG:4326" in out and "EPSG:32649" in out
    assert "16 x 16" in out


def test_template_imagery(tmp_path, capsys):
    config = write_project(tmp_path, template=True)
    code, out, err = run_check(config, capsys)
    assert code == 0, err
    assert "r1.tif" in out and "r2.tif" in out


def test_gb15618_rule(tmp_path, capsys):
    config = write_project(tmp_path, label={"rule": "gb15618"})
    code, out, err = run_check(config, capsys)
    assert code == 0, err
    assert "GB 15618-2018" in out


def test_nodata_patches_are_counted(tmp_path):
    config = write_project(tmp_path)
    data = np.zeros((3, 64, 64), np.uint16)  # the west half without data
    data[:, :, 32:] = 500
    write_raster(tmp_path / "imagery.tif", data, nodata=0)
    summary = check(config)
    n_nodata = sum(r.n_nodata for r in summary.regions)
    assert 0 < n_nodata < summary.n
    assert sum(r.n_usable for r in summary.regions) == summary.n - n_nodata
    assert any("samples left out (nodata)" in w for w in summary.warnings)


def test_every_patch_without_data_is_refused(tmp_path):
    """check and run refuse it alike (run used to crash after reading every patch)."""
    config = write_project(tmp_path)
    data = np.zeros((3, 64, 64), np.uint16)  # all nodata but a strip
    data[:, :, 60:] = 500
    write_raster(tmp_path / "imagery.tif", data, nodata=0)
    with pytest.raises(InputError, match="every sample of region 'r1' inside the imagery"):
        check(config)


# --- warnings (exit 0) ----------------------------------------------------------------


def test_some_samples_outside_warns_with_count(tmp_path, capsys):
    config = write_project(tmp_path)
    table = pd.read_csv(tmp_path / "samples.csv")
    table.loc[[0, 1, 4], "lon"] = 112.0
    table.to_csv(tmp_path / "samples.csv", index=False)
    code, _, err = run_check(config, capsys)
    assert code == 0, err
    assert "soilsource: warning: region 'r1': 3 of 10 samples left out (outside imagery)" in err


def test_single_class_region_warns(tmp_path, capsys):
    config = write_project(tmp_path)  # r1 all clean, r2 both classes
    edit_samples(
        config, lambda t: t.__setitem__("cd_mgkg", t["cd_mgkg"].where(t["region"] != "r1", "0.1"))
    )
    code, _, err = run_check(config, capsys)
    assert code == 0, err
    assert "region 'r1': all 10 usable samples are negative under the rule" in err
    assert "AUC cannot be computed" in err


# --- bad inputs: one line on stderr, exit 2, nothing written ----------------------------


def test_missing_config(tmp_path, capsys):
    code, _, err = run_check(tmp_path / "nope.yaml", capsys)
    assert_one_line_error(code, err, "nope.yaml", "file not found")


def test_yaml_syntax_error(tmp_path, capsys):
    config = write_project(tmp_path)
    config.write_text("samples:\n  path: samples.csv\n   value: cd\n")
    code, _, err = run_check(config, capsys)
    assert_one_line_error(code, err, "config.yaml", "line 3", "YAML syntax error")


def test_unknown_key(tmp_path, capsys):
    config = write_project(tmp_path, patch={"size_m": 160, "sise": 3})
    code, _, err = run_check(config, capsys)
    assert_one_line_error(code, err, "config.yaml", "key 'patch.sise'", "unknown key")


def test_missing_samples_file(tmp_path, capsys):
    config = write_project(tmp_path)
    (tmp_path / "samples.csv").unlink()
    code, _, err = run_check(config, capsys)
    assert_one_line_error(code, err, "samples.csv", "file not found")


def test_missing_imagery_file(tmp_path, capsys):
    config = write_project(tmp_path)
    (tmp_path / "imagery.tif").unlink()
    code, _, err = run_check(config, capsys)
    assert_one_line_error(code, err, "imagery.tif", "file not found")


def test_unreadable_samples_file(tmp_path, capsys):
    config = write_project(tmp_path)
    (tmp_path / "samples.csv").write_bytes(b"\xff\xfe\x00garbage\x00\x81")
    code, _, err = run_check(config, capsys)
    assert_one_line_error(code, err, "samples.csv", "cannot read")


def test_corrupt_raster(tmp_path, capsys):
    config = write_project(tmp_path)
    (tmp_path / "imagery.tif").write_bytes(b"II*\x00 this is not a GeoTIFF " * 10)
    code, _, err = run_check(config, capsys)
    assert_one_line_error(code, err, "imagery.tif", "not a readable raster")


def test_raster_with_corrupt_pixels(tmp_path, capsys):
    """The header reads, the tiles do not: found while reading patches, still one line."""
    config = write_project(tmp_path)
    path = tmp_path / "imagery.tif"
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    profile.update(compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    raw = bytearray(path.read_bytes())
    for k in range(3000, len(raw) - 3000, 5):
        raw[k] = (raw[k] * 31 + 7) % 256
    path.write_bytes(bytes(raw))
    code, _, err = run_check(config, capsys)
    assert_one_line_error(code, err, "imagery.tif", "cannot read pixels")
    assert err.count("\n") == 1, err  # no progress bar left behind in a log


def test_csv_without_named_column(tmp_path, capsys):
    config = write_project(tmp_path)
    edit_config(config, lambda c: c["samples"].__setitem__("value", "cadmium"))
    code, _, err = run_check(config, capsys)
    assert_one_line_error(code, err, "samples.csv", "column 'cadmium'", "not found")


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ({2: "n.d.", 5: "abc"}, "rows 3, 6: not a number"),
        ({0: "-0.2"}, "row 1: negative"),
        ({7: ""}, "row 8: missing concentration"),
    ],
)
def test_bad_concentration_names_rows(tmp_path, capsys, cells, message):
    config = write_project(tmp_path)

    def change(table):
        for row, text in cells.items():
            table.loc[row, "cd_mgkg"] = text

    edit_samples(config, change)
    code, _, err = run_check(config, capsys)
    assert_one_line_error(code, err, "samples.csv", "column 'cd_mgkg'", message)


@pytest.mark.parametrize(
    ("column", "text", "message"),
    [
        ("lat", "", "row 4: missing coordinate"),
        ("lon", "inf", "row 4: not finite"),
        ("lat", "123.0", "row 4: impossible coordinates"),
    ],
)
def test_bad_coordinates(tmp_path, capsys, column, text, message):
    config = write_project(tmp_path)
    edit_samples(config, lambda t: t.loc.__setitem__((3, column), text))
    code, _, err = run_check(config, capsys)
    assert_one_line_error(code, err, "samples.csv", message)


def test_csv_without_crs(tmp_path, capsys):
    config = write_project(tmp_path)
    edit_config(config, lambda c: c["samples"].pop("crs"))
    code, _, err = run_check(config, capsys)
    assert_one_line_error(code, err, "config.yaml", "key 'samples.crs'", "need a CRS")


def test_every_sample_outside_the_imagery(tmp_path, capsys):
    config = write_project(tmp_path)
    # Coordinates taken as RD New metres: valid, but nowhere near the imagery.
    edit_config(config, lambda c: c["samples"].__setitem__("crs", "EPSG:28992"))
    edit_samples(config, lambda t: (t.__setitem__("lon", "150000"), t.__setitem__("lat", "400000")))
    code, _, err = run_check(config, capsys)
    assert_one_line_error(code, err, "imagery.tif", "none of the 10 samples", "region 'r1'")


def test_template_without_file_for_a_region(tmp_path, capsys):
    config = write_project(tmp_path, template=True)
    (tmp_path / "imagery" / "r2.tif").unlink()
    code, _, err = run_check(config, capsys)
    assert_one_line_error(code, err, "r2.tif", "no raster for region 'r2'")


def test_landuse_codes_missing_from_class_table(tmp_path, capsys):
    config = write_project(tmp_path)
    codes = landuse_data()
    codes[5:9, 5:9] = 7
    write_raster(tmp_path / "landuse.tif", codes, nodata=0)
    code, _, err = run_check(config, capsys)
    assert_one_line_error(code, err, "landuse.tif", "code 7", "not in the class table classes.csv")


def test_duplicate_sample_ids(tmp_path, capsys):
    config = write_project(tmp_path)
    edit_samples(config, lambda t: t.loc.__setitem__((6, "sample_id"), "S002"))
    code, _, err = run_check(config, capsys)
    assert_one_line_error(
        code, err, "samples.csv", "column 'sample_id'", "duplicate sample id 'S002' in rows 3, 7"
    )


def test_gb15618_without_ph_column(tmp_path, capsys):
    config = write_project(tmp_path, label={"rule": "gb15618"})
    edit_config(config, lambda c: c["samples"].pop("ph"))
    code, _, err = run_check(config, capsys)
    assert_one_line_error(code, err, "samples.csv", "key 'samples.ph'")


def test_check_writes_nothing_on_the_meuse_copy(tmp_path, capsys):
    """Also for a copy (the example directory is read-only for nobody, so copy and compare)."""
    copy = tmp_path / "meuse"
    shutil.copytree(MEUSE.parent, copy)
    code, _, err = run_check(copy / "config.yaml", capsys)
    assert code == 0, err


def test_python_api_raises_input_error(tmp_path):
    config = write_project(tmp_path)
    (tmp_path / "classes.csv").unlink()
    with pytest.raises(InputError, match=r"classes.csv: file not found"):
        check(config)


@pytest.fixture(scope="module")
def small_city(tmp_path_factory):
    """A small synthetic city (skipped where soilsource.synth is not there yet)."""
    synth = pytest.importorskip("soilsource.synth")
    out = tmp_path_factory.mktemp("city") / "city"
    summary = synth.write_city(out, seed=0, size_px=128)
    return out, summary


def test_synthetic_city_config_checks(small_city, capsys):
    out, truth = small_city
    code, stdout, err = run_check(out / "config.yaml", capsys)
    assert code == 0, err
    summary = check(out / "config.yaml")
    counts = {r.name: (r.n, r.n_pos) for r in summary.regions}
    assert counts == {name: (r["n"], r["n_pos"]) for name, r in truth["regions"].items()}
    assert all(r.n_outside == 0 for r in summary.regions)
    assert "EPSG:4326" in stdout and "EPSG:32649" in stdout
    assert "128 x 128" in stdout  # 1280 m of 10 m pixels


def test_list_of_rasters_each_sample_reads_the_one_covering_it(tmp_path, capsys):
    config = write_project(tmp_path)
    data = imagery_data()
    write_raster(tmp_path / "west.tif", data[:, :, :32], nodata=0)
    east_origin = (ORIGIN[0] + 32 * PIXEL_M, ORIGIN[1])
    write_raster(tmp_path / "east.tif", data[:, :, 32:], nodata=0, origin=east_origin)
    edit_config(config, lambda c: c["imagery"].__setitem__("path", ["west.tif", "east.tif"]))
    code, out, err = run_check(config, capsys)
    assert code == 0, err
    summary = check(config)
    assert all(r.n_outside == 0 for r in summary.regions)
    assert "west.tif, east.tif (2 files)" in out


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"ph": "imagery.tif"}, "key 'mapping.ph': a pH raster is used by rule gb15618 only"),
        ({"area": "nowhere.tif"}, "nowhere.tif: file not found (key 'mapping.area')"),
    ],
)
def test_run_refuses_bad_mapping_rasters_before_training(tmp_path, capsys, mapping, message):
    """check and run share the validation of mapping.*: run stops before any model."""
    config = write_project(tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["mapping"] = mapping
    config.write_text(yaml.safe_dump(raw))
    assert main(["check", str(config)]) == 2
    assert message in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (out / "metrics.json").exists() and not (out / ".checkpoints" / "final.pt").exists()
    assert "cross-validation" not in err and "silicnet" not in err  # no training started
