"""Write the bad-input corpus: ``base/`` (a tiny valid project) and one folder per case.

Run from the repository root when a case is added or the tiny inputs change::

    .venv/bin/python tests/badinputs/make_corpus.py

``--table`` writes nothing and prints the corpus by category as a Markdown table (the
commands each case goes through, from ``tests/test_badinputs.py``).
It rewrites ``base/run``'s model files too (``torch.save`` is not byte-stable): commit them
only when the tiny inputs changed.

A case folder holds only what it breaks (usually ``config.yaml``, sometimes a broken
samples table, class table or raster); ``tests/test_badinputs.py`` copies ``base/``
and lays the case folder over it. The expected messages live in ``cases.yaml``, by
hand: they are the contract, not something this script derives.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
MEUSE = HERE.parents[1] / "examples" / "meuse"
sys.path.insert(0, str(HERE.parent))

from tinyinputs import (  # noqa: E402
    BAND_NAMES,
    ORIGIN,
    imagery_data,
    landuse_data,
    sample_table,
    write_project,
    write_raster,
)


def write_trained_run(root: Path) -> Path:
    """``root/run``: a complete run of ``root``'s project as ``soilsource predict`` reads it.

    ``config.yaml``, ``run.json`` and each region's SI-LICNet file with the metadata a run
    saves (untrained weights, seed 0: predict checks the imagery before it uses them).
    """
    import torch

    from soilsource.data.patches import BandStats
    from soilsource.inputs import describe_raster
    from soilsource.inputs.imagery import imagery_record
    from soilsource.models import SILICNet
    from soilsource.models.modelio import save_model
    from soilsource.rundir import mark

    run = root / "run"
    config = yaml.safe_load((root / "config.yaml").read_text())
    config["samples"]["path"] = "../samples.csv"
    config["imagery"]["path"] = "../imagery.tif"
    config["landuse"].update(path="../landuse.tif", classes="../classes.csv")
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    record = imagery_record(describe_raster(root / "imagery.tif"))
    stats = BandStats(np.full(3, 2000.0, np.float32), np.full(3, 1000.0, np.float32), BAND_NAMES)
    for region in ("r1", "r2"):
        torch.manual_seed(0)
        maps = {"rule": None, "rule_text": "Cd value > 0.5 mg/kg", "model_text": "SI-LICNet"}
        metadata = {
            "scope": region,
            "patch_px": 16,
            "band_names": list(BAND_NAMES),
            "band_stats": stats.to_dict(),
            "imagery": record,
            "maps": {region: maps},
        }
        save_model(
            run / "models" / region / "silicnet.pt", SILICNet(3, patch_px=16), metadata=metadata
        )
    mark(run, "complete")
    return run


def base_config() -> dict:
    """The valid configuration of ``base/`` as a dict, for cases to break."""
    return yaml.safe_load((HERE / "base" / "config.yaml").read_text())


def write_case(case: str, config: dict | str | None = None, **files: object) -> Path:
    """A case folder with its ``config.yaml`` (dict or raw text) and extra files."""
    folder = HERE / "cases" / case
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(config, dict):
        (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    elif isinstance(config, str):
        (folder / "config.yaml").write_text(config)
    for name, content in files.items():
        name = name.replace("__", ".")
        if isinstance(content, pd.DataFrame):
            content.to_csv(folder / name, index=False)
        elif isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(str(content))
    return folder


def changed(**sections: object) -> dict:
    """The base configuration with ``section.key=value`` changes (None deletes a key)."""
    raw = base_config()
    for dotted, value in sections.items():
        keys = dotted.split("__")
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return raw


def meuse_changed(**sections: object) -> dict:
    """The Meuse example's configuration with changes (cases with ``base: meuse``)."""
    raw = yaml.safe_load((MEUSE / "config.yaml").read_text())
    for dotted, value in sections.items():
        *parents, last = dotted.split("__")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return raw


def samples(change) -> pd.DataFrame:
    table = sample_table().astype({"cd_mgkg": object, "lon": object, "lat": object})
    change(table)
    return table


def main() -> None:
    shutil.rmtree(HERE / "base", ignore_errors=True)
    shutil.rmtree(HERE / "cases", ignore_errors=True)
    write_project(HERE / "base")
    write_trained_run(HERE / "base")

    # --- configuration
    write_case("config_unknown_key", changed(patchs={"size_m": 160}))
    write_case("config_unknown_nested_key", changed(label__treshold=0.5, label__threshold=None))
    write_case("config_wrong_type", changed(patch__size_m="big"))
    write_case("config_negative_size", changed(patch__size_m=-160))
    write_case("config_missing_samples_path", changed(samples__path=None))
    write_case("config_missing_label", changed(label=None))
    write_case("config_yaml_syntax", "samples:\n  path: samples.csv\n value: cd_mgkg\n")
    write_case("config_not_a_mapping", "- samples.csv\n- imagery.tif\n")
    write_case("config_empty_file", "")
    write_case("config_bad_crs", changed(samples__crs="EPSG:999999"))
    write_case("config_csv_without_crs", changed(samples__crs=None))
    write_case("config_unknown_metal", changed(metal="Au"))
    write_case("config_bad_scope", changed(train__scope="county"))
    write_case("config_one_fold", changed(train__folds=1))
    write_case("config_window_larger_than_patch", changed(explain={"window_m": 320.0}))
    write_case("config_hotspot_share_above_one", changed(explain={"hotspot_share": 1.5}))
    write_case("config_bad_device", changed(compute={"device": "tpu"}))
    write_case("config_empty_imagery_list", changed(imagery__path=[]))
    write_case(
        "config_list_with_template", changed(imagery__path=["imagery.tif", "imagery/{region}.tif"])
    )
    write_case("config_zero_epochs", changed(train__max_epochs=0))
    write_case("config_unknown_cv", changed(train__cv="leave-one-out"))
    write_case("config_zero_members", changed(model__members=0))
    write_case("config_three_sectors", changed(model__sectors=3))
    write_case("config_unknown_augmentation", changed(train__augment="rotate"))
    write_case("config_pretrain_not_boolean", changed(model__pretrain="sometimes"))
    write_case("config_zero_pretrain_steps", changed(model__pretrain_steps=0))
    write_case("config_negative_candidates", changed(explain__candidates=-1))
    write_case("mapping_area_missing", changed(mapping__area="nowhere.tif"))
    write_case("mapping_ph_without_ph_rule", changed(mapping__ph="imagery.tif"))
    write_case("config_unknown_baseline", changed(model={"baselines": ["xgboost"]}))
    write_case("reference_missing_file", changed(report={"reference": ["river.geojson"]}))

    # --- samples
    write_case("samples_missing_file", changed(samples__path="nowhere.csv"))
    write_case("samples_missing_value_column", changed(samples__value="cadmium"))
    write_case("samples_missing_id_column", changed(samples__id="sample"))

    def not_numbers(t):
        t.loc[[2, 6], "cd_mgkg"] = ["n.d.", "abc"]

    write_case("samples_value_not_a_number", samples__csv=samples(not_numbers))

    def negative(t):
        t.loc[4, "cd_mgkg"] = -0.2

    write_case("samples_negative_value", samples__csv=samples(negative))
    write_case("samples_header_only", samples__csv=sample_table().iloc[:0])
    write_case("samples_zero_bytes", samples__csv="")

    def duplicate(t):
        t.loc[5, "sample_id"] = t.loc[1, "sample_id"]

    write_case("samples_duplicate_ids", samples__csv=samples(duplicate))

    def impossible(t):
        t.loc[3, "lat"] = 95.0

    write_case("samples_latitude_outside_crs", samples__csv=samples(impossible))

    def missing_xy(t):
        t.loc[[0, 9], "lon"] = np.nan

    write_case("samples_missing_coordinates", samples__csv=samples(missing_xy))

    def far_away(t):
        t["lon"] = t["lon"].astype(float) + 1.0

    write_case("samples_all_outside_imagery", samples__csv=samples(far_away))

    def ph_15(t):
        t.loc[7, "ph"] = 15.2

    write_case("samples_ph_outside_range", samples__csv=samples(ph_15))

    def slash(t):
        t.loc[[0, 2], "region"] = "north/east"

    write_case("samples_region_with_slash", samples__csv=samples(slash))
    write_case("samples_not_a_table", samples__csv=bytes(range(256)) * 4)
    write_case(
        "samples_swapped_crs", changed(samples__crs="EPSG:32649")
    )  # lon/lat read as UTM metres: fine numbers, far from the imagery

    # --- rasters
    write_case("raster_missing_file", changed(imagery__path="landsat.tif"))
    write_case("raster_not_a_raster", imagery__tif="this is not a GeoTIFF\n")
    no_crs = write_case("raster_no_crs")
    write_raster(no_crs / "imagery.tif", imagery_data()[:, :16, :16], crs=None, nodata=0)
    coarse = write_case(
        "raster_mismatched_pixel_sizes", changed(imagery__path=["coarse.tif", "imagery.tif"])
    )  # the 20 m raster covers the west half, the 10 m one the rest: patches of 8 and 16 px
    write_raster(
        coarse / "coarse.tif", imagery_data(1)[:, :32, :16], pixel=20.0, nodata=0,
        descriptions=BAND_NAMES,
    )  # fmt: skip
    regions = write_case(
        "raster_pixel_sizes_across_regions", changed(imagery__path="imagery/{region}.tif")
    )  # r1 at 10 m, r2 at 20 m over the same ground: patches of 16 and 8 px
    write_raster(regions / "imagery" / "r1.tif", imagery_data(), nodata=0, descriptions=BAND_NAMES)
    write_raster(
        regions / "imagery" / "r2.tif", imagery_data(1)[:, :32, :32], pixel=20.0, nodata=0,
        descriptions=BAND_NAMES,
    )  # fmt: skip
    bands = write_case(
        "raster_different_bands", changed(imagery__path=["imagery.tif", "twoband.tif"])
    )
    write_raster(bands / "twoband.tif", imagery_data(1)[:2], nodata=0, descriptions=BAND_NAMES[:2])
    template = write_case(
        "raster_template_region_missing", changed(imagery__path="imagery/{region}.tif")
    )
    write_raster(template / "imagery" / "r1.tif", imagery_data(), nodata=0, descriptions=BAND_NAMES)

    # --- land use
    write_case("landuse_missing_file", changed(landuse__path="landuse_2020.tif"))
    write_case("landuse_classes_missing_column", classes__csv="code,label\n1,industrial\n2,paddy\n")
    write_case("landuse_classes_duplicate_code", classes__csv="code,name\n1,industrial\n1,paddy\n")
    write_case("landuse_code_not_in_classes", classes__csv="code,name\n1,industrial\n2,paddy\n")
    write_case("landuse_band_too_high", changed(landuse__band=3))
    vector = write_case(
        "landuse_vector_without_field", changed(landuse={"path": "landuse.geojson"})
    )
    (vector / "landuse.geojson").write_text(
        '{"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": '
        '"urn:ogc:def:crs:EPSG::32649"}}, "features": [{"type": "Feature", "properties": '
        '{"kind": 1}, "geometry": {"type": "Polygon", "coordinates": [[[500000, 2500000], '
        "[500640, 2500000], [500640, 2500640], [500000, 2500640], [500000, 2500000]]]}}]}\n"
    )

    # --- label rules
    write_case("label_gb15618_without_ph", changed(label={"rule": "gb15618"}, samples__ph=None))
    write_case("label_background_without_value", changed(label={"rule": "background"}))
    write_case("label_threshold_missing", changed(label={"rule": "threshold"}))
    write_case("label_unknown_rule", changed(label={"rule": "igeo", "threshold": 0.5}))
    write_case("label_key_of_other_rule", changed(label={"rule": "quantile", "threshold": 0.5}))
    write_case("label_quantile_above_one", changed(label={"rule": "quantile", "q": 1.5}))

    # --- the real Meuse example (copied whole, base: meuse in cases.yaml)
    write_case("meuse_gb15618_without_ph", meuse_changed(label={"rule": "gb15618"}))
    write_case("meuse_rd_coordinates_as_lonlat", meuse_changed(samples__crs="EPSG:4326"))
    write_case("meuse_landuse_band_3", meuse_changed(landuse__band=3))
    write_case("meuse_value_column_of_other_metal", meuse_changed(samples__value="Cd"))

    # --- predict: new imagery against what base/run's models were trained on
    swapped = write_case("predict_bands_swapped")  # blue and red swapped
    write_raster(swapped / "new.tif", imagery_data(1)[[1, 0, 2]], nodata=0,
                 descriptions=("red", "blue", "nir"))  # fmt: skip
    coarser = write_case("predict_other_pixel_size")
    write_raster(coarser / "new.tif", imagery_data(1)[:, :32, :32], pixel=20.0, nodata=0,
                 descriptions=BAND_NAMES)  # fmt: skip
    fewer = write_case("predict_band_missing")
    write_raster(fewer / "new.tif", imagery_data(1)[:2], nodata=0, descriptions=BAND_NAMES[:2])
    scaled = write_case("predict_other_scale")  # reflectance x 10000 declared as x 0.0001
    write_raster(scaled / "new.tif", imagery_data(1), nodata=0, descriptions=BAND_NAMES,
                 scales=(1.0, 0.0001, 1.0))  # fmt: skip
    renamed = write_case("predict_unnamed_bands")  # no band descriptions
    write_raster(renamed / "new.tif", imagery_data(1), nodata=0)
    old = write_case("predict_model_without_imagery_record")
    import torch

    from soilsource.models import SILICNet
    from soilsource.models.modelio import save_model

    torch.manual_seed(0)
    metadata = {"scope": "r1", "patch_px": 16, "band_names": list(BAND_NAMES)}  # no imagery
    save_model(
        old / "run" / "models" / "r1" / "silicnet.pt", SILICNet(3, patch_px=16), metadata=metadata
    )

    # --- command line (the base project, bad arguments)
    write_case("cli_out_is_a_file", **{"out": "a file, not a directory\n"})

    write_preflight_cases()


def write_preflight_cases() -> None:
    """The cases of issue 16: each goes through ``run`` as well as ``check`` (or ``predict``)
    and must be refused by the preflight, before anything is trained or written."""
    import rasterio
    from affine import Affine

    # --- imagery
    rotated = write_case("raster_rotated_geotransform")
    write_raster(rotated / "imagery.tif", imagery_data(), nodata=0, descriptions=BAND_NAMES)
    with rasterio.open(rotated / "imagery.tif", "r+") as dst:  # 30 degrees off north-up
        dst.transform = Affine.translation(*ORIGIN) * Affine.rotation(30) * Affine.scale(10, -10)
    reordered = write_case(
        "raster_scenes_bands_in_other_order", changed(imagery__path=["imagery.tif", "east.tif"])
    )
    east = (ORIGIN[0] + 640, ORIGIN[1])  # the scene east of imagery.tif
    write_raster(reordered / "east.tif", imagery_data(1)[[1, 0, 2]], nodata=0,
                 descriptions=("red", "blue", "nir"), origin=east)  # fmt: skip
    unnamed = write_case(
        "raster_scene_without_band_names", changed(imagery__path=["imagery.tif", "east.tif"])
    )
    write_raster(unnamed / "east.tif", imagery_data(1), nodata=0,
                 origin=(ORIGIN[0] + 640, ORIGIN[1]))  # fmt: skip
    scaled = write_case(
        "raster_scenes_other_scale", changed(imagery__path=["imagery.tif", "east.tif"])
    )
    write_raster(scaled / "east.tif", imagery_data(1), nodata=0, descriptions=BAND_NAMES,
                 scales=(1.0, 0.0001, 1.0), origin=(ORIGIN[0] + 640, ORIGIN[1]))  # fmt: skip
    fewer = write_case(
        "raster_template_region_other_bands", changed(imagery__path="imagery/{region}.tif")
    )
    write_raster(fewer / "imagery" / "r1.tif", imagery_data(), nodata=0, descriptions=BAND_NAMES)
    write_raster(fewer / "imagery" / "r2.tif", imagery_data(1)[:2], nodata=0,
                 descriptions=BAND_NAMES[:2])  # fmt: skip
    write_case("raster_patch_larger_than_imagery", changed(patch__size_m=1000))
    empty = write_case("raster_every_patch_without_data")
    data = imagery_data()
    data[:, :, :60] = 0  # nodata but a strip in the east
    write_raster(empty / "imagery.tif", data, nodata=0, descriptions=BAND_NAMES)
    nan = write_case("raster_nan_nodata_everywhere")  # float32, nodata NaN, all NaN
    write_raster(nan / "imagery.tif", np.full((3, 64, 64), np.nan, np.float32), nodata=np.nan,
                 descriptions=BAND_NAMES)  # fmt: skip

    # --- samples
    def r2_away(t):
        t.loc[t["region"] == "r2", "lat"] = t.loc[t["region"] == "r2", "lat"].astype(float) + 1

    write_case("samples_one_region_outside_imagery", samples__csv=samples(r2_away))

    def unicode_away(t):
        r2_away(t)
        t["region"] = t["region"].map({"r1": "Nord Süd", "r2": "东莞 北"})

    write_case("samples_unicode_region_outside_imagery", samples__csv=samples(unicode_away))

    def corner(t):  # every sample at the raster's south-east corner pixel
        corner_lonlat = _lonlat(ORIGIN[0] + 63.5 * 10, ORIGIN[1] - 63.5 * 10)
        t["lon"], t["lat"] = corner_lonlat

    write_case("samples_all_on_the_raster_corner", samples__csv=samples(corner))
    write_case("samples_fewer_than_folds", changed(train__folds=12))
    write_case("samples_region_column_missing", changed(samples__region="zone"))

    def no_values(t):
        t["cd_mgkg"] = ""

    write_case("samples_value_column_empty", samples__csv=samples(no_values))

    def ph_blank(t):
        t.loc[[1, 3], "ph"] = np.nan

    write_case(
        "samples_ph_blank_under_gb15618",
        changed(label={"rule": "gb15618"}),
        samples__csv=samples(ph_blank),
    )

    # --- labels and metals
    write_case("label_threshold_negative", changed(label={"rule": "threshold", "threshold": -0.3}))

    # several metals (`metal:` a list, `samples.value` a mapping) and `sources:`
    def more_metals(t):
        rng = np.random.default_rng(4)
        t["pb_mgkg"] = rng.uniform(20, 120, len(t)).round(1)
        t["zn_mgkg"] = rng.uniform(50, 300, len(t)).round(1)

    def metals(*names, **more):
        columns = {"Cd": "cd_mgkg", "Pb": "pb_mgkg", "Zn": "zn_mgkg"}
        return changed(metal=list(names), samples__value={m: columns[m] for m in names}, **more)

    three = samples(more_metals)
    write_case("metals_one_column_for_two", changed(metal=["Cd", "Pb"]), samples__csv=three)
    write_case("metals_no_column_for_one",
               changed(metal=["Cd", "Pb"], samples__value={"Cd": "cd_mgkg"}),
               samples__csv=three)  # fmt: skip
    write_case("metals_listed_twice", changed(metal=["Cd", "cd"]), samples__csv=three)
    write_case("metals_unknown_in_list", changed(metal=["Cd", "Fe"]), samples__csv=three)
    write_case("metals_column_not_in_file",
               changed(metal=["Cd", "Pb"], samples__value={"Cd": "cd_mgkg", "Pb": "lead"}),
               samples__csv=three)  # fmt: skip

    def negative_lead(t):
        more_metals(t)
        t.loc[4, "pb_mgkg"] = -3.0

    write_case("metals_negative_value_of_one", metals("Cd", "Pb"),
               samples__csv=samples(negative_lead))  # fmt: skip
    write_case("metals_threshold_missing_for_one",
               metals("Cd", "Pb", label={"rule": "threshold", "threshold": {"Cd": 0.5}}),
               samples__csv=three)  # fmt: skip
    write_case("metals_one_background_for_two",
               metals("Cd", "Pb", label={"rule": "background", "background": 0.2}),
               samples__csv=three)  # fmt: skip
    write_case("sources_two_metals", metals("Cd", "Pb", sources={}), samples__csv=three)
    write_case("sources_factors_zero", metals("Cd", "Pb", "Zn", sources={"factors": 0}),
               samples__csv=three)  # fmt: skip
    write_case(
        "sources_factors_as_many_as_metals",
        metals("Cd", "Pb", "Zn", sources={"factors": 3}),
        samples__csv=three,
    )
    write_case("sources_detection_limit_of_another_metal",
               metals("Cd", "Pb", "Zn", sources={"detection_limit": {"Hg": 0.01}}),
               samples__csv=three)  # fmt: skip
    write_case("sources_error_fraction_negative",
               metals("Cd", "Pb", "Zn", sources={"error_fraction": -0.1}),
               samples__csv=three)  # fmt: skip
    write_case(
        "sources_unknown_key", metals("Cd", "Pb", "Zn", sources={"factor": 2}), samples__csv=three
    )

    def too_few(t):
        more_metals(t)

    few = samples(too_few).head(8)
    write_case("sources_too_few_samples", metals("Cd", "Pb", "Zn", sources={}), samples__csv=few)

    # --- land use and class table
    write_case(
        "landuse_classes_code_not_integer",
        classes__csv="code,name\n1,industrial\nb,paddy\n3,forest\n",
    )
    write_case("landuse_classes_missing_file", changed(landuse__classes="nowhere.csv"))
    floats = write_case("landuse_float_codes")
    write_raster(floats / "landuse.tif", landuse_data().astype(np.float32), nodata=0)
    vector = write_case(
        "landuse_vector_field_not_found",
        changed(landuse={"path": "landuse.geojson", "field": "class", "classes": "classes.csv"}),
    )
    (vector / "landuse.geojson").write_text(_polygon_geojson("kind", 1))
    names = write_case(
        "landuse_vector_names_not_in_classes",
        changed(landuse={"path": "landuse.geojson", "field": "kind", "classes": "classes.csv"}),
    )
    (names / "landuse.geojson").write_text(_polygon_geojson("kind", '"mine"'))
    per_region = write_case(
        "landuse_template_region_missing",
        changed(landuse={"path": "landuse/{region}.tif", "classes": "classes.csv"}),
    )
    write_raster(per_region / "landuse" / "r1.tif", landuse_data(), nodata=0)

    # --- mapping and reference
    away = write_case("mapping_area_outside_every_region", changed(mapping={"area": "area.tif"}))
    write_raster(away / "area.tif", np.ones((1, 16, 16), np.uint8),
                 origin=(ORIGIN[0] + 50_000, ORIGIN[1]), nodata=0)  # fmt: skip
    write_case("mapping_ph_missing_file",
               changed(label={"rule": "gb15618"}, mapping={"ph": "ph.tif"}))  # fmt: skip
    write_case(
        "reference_not_readable",
        changed(report={"reference": ["river.geojson"]}),
        river__geojson="{not json\n",
    )

    # --- memory and disk (the free amounts come from SOILSOURCE_FREE_MEMORY / _DISK)
    write_case("memory_patches_too_large")
    write_case("disk_too_small_for_outputs")

    # --- run directory
    users = write_case("run_out_holds_user_files")
    (users / "out").mkdir()
    (users / "out" / "notes.txt").write_text("mine\n")
    complete = write_case("run_out_holds_complete_run")
    (complete / "out").mkdir()
    (complete / "out" / "run.json").write_text('{"status": "complete"}\n')
    busy = write_case("run_in_progress")  # the test holds out/.soilsource.lock in a process
    (busy / "out").mkdir()
    (busy / "out" / "run.json").write_text('{"status": "running"}\n')

    # --- resume
    done = write_case("resume_complete_run")
    (done / "out").mkdir()
    (done / "out" / "run.json").write_text('{"status": "complete"}\n')
    other = write_case("resume_other_configuration")
    (other / "out" / ".checkpoints").mkdir(parents=True)
    (other / "out" / "run.json").write_text('{"status": "running"}\n')
    (other / "out" / ".checkpoints" / "fingerprint.json").write_text(
        '{"config": "patch:\\n  size_m: 320\\n", "settings": {}}\n'
    )
    unreadable = write_case("resume_unreadable_fingerprint")
    (unreadable / "out" / ".checkpoints").mkdir(parents=True)
    (unreadable / "out" / "run.json").write_text('{"status": "running"}\n')
    (unreadable / "out" / ".checkpoints" / "fingerprint.json").write_text("{half")

    # --- predict
    unfinished = write_case("predict_run_unfinished")
    (unfinished / "run").mkdir()
    (unfinished / "run" / "run.json").write_text('{"status": "running"}\n')
    bare = write_case("predict_run_without_models")
    (bare / "run2").mkdir()
    (bare / "run2" / "run.json").write_text('{"status": "complete"}\n')
    shutil.copy(HERE / "base" / "run" / "config.yaml", bare / "run2" / "config.yaml")
    write_case("predict_imagery_missing")
    mine = write_case("predict_out_holds_user_files")
    (mine / "pred").mkdir()
    (mine / "pred" / "notes.txt").write_text("mine\n")
    write_case("predict_run_dir_missing")


def _lonlat(x: float, y: float) -> tuple[float, float]:
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:32649", "EPSG:4326", always_xy=True).transform(x, y)


def _polygon_geojson(field: str, value: object) -> str:
    """One polygon over the tiny imagery with ``field`` = ``value`` (raw JSON)."""
    x0, y1 = ORIGIN
    x1, y0 = x0 + 640, y1 - 640
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return (
        '{"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": '
        '"urn:ogc:def:crs:EPSG::32649"}}, "features": [{"type": "Feature", "properties": '
        f'{{"{field}": {value}}}, "geometry": {{"type": "Polygon", "coordinates": [{ring}]}}}}]}}\n'
    )


def table() -> str:
    """The corpus by category: cases, commands run, and how many go through ``run``."""
    from test_badinputs import CASES, through

    rows: dict[str, list[dict]] = {}
    for case in CASES:
        rows.setdefault(case["category"], []).append(case)
    lines = [
        "| category | cases | through run | through check | through predict |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    totals = [0, 0, 0, 0]
    for category, cases in sorted(rows.items(), key=lambda kv: -len(kv[1])):
        commands = [[args[0] for args in through(case)] for case in cases]
        counts = [len(cases)] + [sum(c in cmds for cmds in commands)
                                 for c in ("run", "check", "predict")]  # fmt: skip
        totals = [t + c for t, c in zip(totals, counts, strict=True)]
        lines.append(f"| {category} | " + " | ".join(str(c) for c in counts) + " |")
    lines.append("| **all** | " + " | ".join(f"**{t}**" for t in totals) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if "--table" in sys.argv[1:]:
        print(table())
    else:
        main()
