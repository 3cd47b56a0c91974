"""The documentation agrees with the code: every configuration key is in the reference."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pydantic import BaseModel

from soilsource.config import Config, _model_of

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location(
        "make_configuration", ROOT / "docs" / "make_configuration.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        sub = _model_of(field.annotation)
        if sub is not None:
            out += _keys(sub, f"{prefix}{name}.")
    return out


def test_configuration_reference_lists_every_key():
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [key for key in _keys(Config) if f"| `{key}` |" not in page]
    assert not missing, f"not in docs/configuration.md: {missing}"


def test_configuration_reference_is_up_to_date():
    for path in (ROOT / "docs" / "configuration.md", ROOT / "src/soilsource/configuration.md"):
        page = path.read_text(encoding="utf-8")
        assert page == _generator().markdown(), "run: python docs/make_configuration.py"


def test_readme_quick_start_and_screenshot():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo\nmake test" in readme
    for image in ("docs/images/report.png",):
        assert image in readme and (ROOT / image).is_file()
