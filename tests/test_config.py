"""Configuration: the SPEC schema, defaults, path resolution, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from soilsource.config import Config, TrainConfig, config_from_dict, load_config
from soilsource.errors import InputError

# The configuration the synthetic city writes (it must load as is).
SYNTH_CONFIG = """\
metal: Cd
samples: {path: samples.csv, x: lon, y: lat, crs: "EPSG:4326", value: cd_mgkg,
          region: region, id: sample_id, ph: ph, paddy: is_paddy}
imagery: {path: "imagery/{region}.tif"}
landuse: {path: "landuse/{region}.tif", classes: landuse/classes.csv}
label: {rule: gb15618}
patch: {size_m: 1280}
explain: {window_m: 160, stride_m: 40}
model: {baselines: [random_forest], target: value}
train: {scope: region, folds: 5, cv: knndm, seed: 0}
compute: {device: auto, scheduler: null}
"""

MINIMAL = {
    "samples": {"path": "s.csv", "crs": "EPSG:28992", "value": "cd"},
    "imagery": {"path": "a.tif"},
    "label": {"rule": "threshold", "threshold": 2.0},
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def error_of(raw: dict) -> str:
    with pytest.raises(InputError) as info:
        config_from_dict(raw, source="config.yaml")
    return str(info.value)


def test_synthetic_city_config_loads_and_resolves_paths(tmp_path):
    path = write(tmp_path, SYNTH_CONFIG)
    config = load_config(path)
    base = path.parent.resolve()
    assert config.samples.path == base / "samples.csv"
    assert config.imagery.path == base / "imagery" / "{region}.tif"
    assert config.imagery.is_template
    assert config.landuse.classes == base / "landuse" / "classes.csv"
    assert config.label.rule == "gb15618"
    assert config.patch.size_m == 1280
    assert config.train.folds == 5
    assert config.compute.scheduler is None
    assert config.source == path


def test_defaults_for_everything_but_samples_imagery_label():
    config = config_from_dict(MINIMAL)
    assert config.metal == "Cd"
    assert config.landuse is None
    assert config.patch.size_m == 1280
    assert config.explain.window_m == 160 and config.explain.stride_m == 40
    assert config.explain.baseline == 0.0
    assert config.explain.hotspot_share == 0.05
    assert config.model.baselines == ["random_forest"]
    assert (config.train.scope, config.train.cv, config.train.folds) == ("region", "knndm", 5)
    assert config.model.target == "value"
    assert config.train.block_m is None
    assert config.compute.device == "auto"
    for key in ("samples", "imagery", "label"):
        raw = {k: v for k, v in MINIMAL.items() if k != key}
        assert error_of(raw) == f"config.yaml: key '{key}': required key is missing"


def test_absolute_paths_and_lists_of_rasters(tmp_path):
    raw = dict(MINIMAL, imagery={"path": ["a.tif", str(tmp_path / "b.tif")]})
    config = config_from_dict(raw, base_dir=tmp_path / "x")
    assert config.imagery.path == [(tmp_path / "x").resolve() / "a.tif", tmp_path / "b.tif"]
    assert not config.imagery.is_template


def test_resolved_yaml_round_trip(tmp_path):
    config = load_config(write(tmp_path, SYNTH_CONFIG))
    again = load_config(write(tmp_path / "elsewhere", config.to_yaml()))
    assert again.model_dump() == config.model_dump()


def test_label_rule_defaults():
    background = config_from_dict(dict(MINIMAL, label={"rule": "background", "background": 0.2}))
    assert background.label.factor == 1.5
    quantile = config_from_dict(dict(MINIMAL, label={"rule": "quantile"}))
    assert quantile.label.q == 0.75


def test_metal_is_case_insensitive():
    assert config_from_dict(dict(MINIMAL, metal="cd")).metal == "Cd"


def test_default_block_m():
    assert TrainConfig().default_block_m(1280, 3000) == 1280
    assert TrainConfig(folds=5).default_block_m(1280, 20_000) == 4000
    assert TrainConfig(block_m=500).default_block_m(1280, 20_000) == 500


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"patch": {"size_m": -1}}, "key 'patch.size_m': input should be greater than 0"),
        ({"patch": {"size_m": "big"}}, "key 'patch.size_m': input should be a valid number"),
        ({"patch": {"sise_m": 3}}, "key 'patch.sise_m': unknown key; did you mean 'size_m'?"),
        ({"modle": {}}, "key 'modle': unknown key; did you mean 'model'?"),
        ({"metal": "Fe"}, "key 'metal': got 'Fe'; input should be 'Cd', 'Hg'"),
        ({"model": {"baselines": ["rf"]}}, "key 'model.baselines[0]': got 'rf'"),
        ({"train": {"folds": 1}}, "key 'train.folds': input should be greater than or equal to 2"),
        ({"train": {"cv": "kfold"}}, "key 'train.cv': got 'kfold'"),
        ({"explain": {"hotspot_share": 1.5}}, "key 'explain.hotspot_share': input should be less"),
        ({"compute": {"device": "tpu"}}, "key 'compute.device': got 'tpu'"),
        ({"imagery": "a.tif"}, "key 'imagery': expected a mapping of keys"),
        ({"imagery": {"path": []}}, "key 'imagery.path': needs at least one raster"),
        ({"label": {"rule": "threshold"}}, "key 'label.threshold': required by rule 'threshold'"),
        ({"label": {"rule": "gb15618", "q": 0.5}}, "key 'label.q': not used by rule 'gb15618'"),
        ({"label": {"rule": "median"}}, "key 'label.rule': got 'median'"),
        ({"label": {"rule": "background"}}, "key 'label.background': required by rule"),
        ({"label": {"rule": "quantile", "q": 1.0}}, "key 'label.q': input should be less than 1"),
        (
            {"samples": {"path": "s.csv", "value": "cd"}},
            "key 'samples.crs': CSV coordinates need a CRS",
        ),
        (
            {"samples": {"path": "s.csv", "value": "cd", "crs": "EPSG:0"}},
            "key 'samples.crs': 'EPSG:0' is not a CRS pyproj knows",
        ),
    ],
)
def test_bad_values_name_the_dotted_key(change, expected):
    message = error_of(dict(MINIMAL, **change))
    assert message.startswith("config.yaml: "), message
    assert expected in message, message


def test_vector_samples_need_no_crs():
    config = config_from_dict(dict(MINIMAL, samples={"path": "s.gpkg", "value": "cd"}))
    assert config.samples.crs is None


def test_yaml_syntax_error_has_line(tmp_path):
    path = write(tmp_path, "samples:\n  path: s.csv\n  value: [cd\nimagery: {path: a.tif}\n")
    with pytest.raises(InputError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: line ")
    assert "YAML syntax error" in str(info.value)


def test_not_a_mapping_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="expected a mapping of keys"):
        load_config(write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(InputError, match="file not found"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    path = write(tmp_path, "!!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(InputError, match="YAML syntax error"):
        load_config(path)


def test_several_problems_are_counted():
    raw = dict(MINIMAL, patch={"size_m": -1, "extra": 1})
    assert "(and 1 more problem)" in error_of(raw)


def test_model_is_the_public_type():
    assert isinstance(config_from_dict(MINIMAL), Config)
    assert yaml.safe_load(config_from_dict(MINIMAL).to_yaml())["label"]["threshold"] == 2.0


def test_cv_buffer_defaults_to_zero_and_refuses_a_negative_distance():
    """train.buffer_m: 0 keeps every training sample; a negative distance is refused."""
    assert TrainConfig().buffer_m == 0.0
    assert TrainConfig(buffer_m=640).buffer_m == 640.0
    with pytest.raises(ValueError):
        TrainConfig(buffer_m=-1)
