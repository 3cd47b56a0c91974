"""Imports flow one way: every module of src/soilsource imports only its own layer and those below.

:data:`LAYERS` is the one ordered list of the layers, bottom first (DEVELOPERS.md's layout
shows the same order; :func:`test_developers_layout_follows_the_layers` keeps them in step).
Every ``import`` counts, at module level or inside a function: a function-level import of a
later layer is still a dependency, only hidden. No module uses ``if TYPE_CHECKING`` imports
today; if one ever must, it is held to the same order (the checker does not exempt them).
Within a layer, imports are free but may not go round in a circle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "soilsource"

LAYERS: tuple[str, ...] = (
    # plumbing: the package root (__version__), one-line errors, atomic writes, progress,
    # where loops run (threads or Dask), GIS-ready outputs, the run directory's names and lock
    "soilsource",
    "errors",
    "atomic",
    "progress",
    "runtime",
    "gisout",
    "rundir",
    "config",  # the YAML configuration
    "inputs",  # the user's files read and checked: samples, imagery, land use, reference
    "data",  # labels, targets, patches, the per-region dataset
    "sources",  # receptor-model source apportionment over several metals
    "synth",  # the known-truth synthetic city (uses the label rules)
    "learn",  # fitting loop, fold designs, cross-validation and its scores
    "models",  # SI-LICNet, baselines, the model registry, model files, pretraining
    "explain",  # occlusion sensitivity, mosaics, candidate sources, truth scoring
    "analysis",  # hotspots and land-use statistics of the sensitivity maps
    "mapping",  # wall-to-wall maps and their area of applicability
    "report",  # report.html and its figures
    "pipeline",  # the run layer: preflight, run, resume, check, predict
    "cli",  # the command line
)


def module_name(path: Path, root: Path) -> str:
    """``root/models/silicnet.py`` -> ``soilsource.models.silicnet`` (a package is its __init__)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([root.name, *parts])


def layer_of(module: str, layers: tuple[str, ...] = LAYERS) -> int:
    """The index in ``layers`` of a module; the package root is ``layers[0]``."""
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else parts[0]
    if key not in layers:
        raise KeyError(f"{module}: its layer {key!r} is not in LAYERS (add it in its place)")
    return layers.index(key)


def imports_of(path: Path, package: str, modules: set[str]) -> list[tuple[str, int]]:
    """The package's modules that ``path`` imports, with line numbers, wherever the import is.

    ``from soilsource import progress`` is the module ``soilsource.progress``; ``from
    soilsource.models import SILICNet`` the package ``soilsource.models`` (its __init__).
    """
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if _ours(a.name, package)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: relative import (write it absolute)")
            if node.module and _ours(node.module, package):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.append((sub if sub in modules else node.module, node.lineno))
    return list(dict.fromkeys(found))


def _ours(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(root: Path, layers: tuple[str, ...] = LAYERS) -> list[str]:
    """Every import of a later layer and every circle of imports under the package ``root``."""
    package = root.name
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(paths)
    graph: dict[str, set[str]] = {}
    problems = []
    for module, path in paths.items():
        here = layer_of(module, layers)
        graph[module] = set()
        for target, line in imports_of(path, package, modules):
            if target not in modules:
                problems.append(f"{module}:{line} imports {target}, which does not exist")
                continue
            graph[module].add(target)
            there = layer_of(target, layers)
            if there > here:
                problems.append(
                    f"{module}:{line} imports {target}: layer {layers[there]!r} is above "
                    f"{layers[here]!r}"
                )
    problems += [f"import circle: {' -> '.join(c)}" for c in circles(graph)]
    return problems


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of modules (Tarjan's algorithm), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(_path_round(sorted(group), graph))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _path_round(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A circle through the group's first module, found by breadth-first search."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return group


def test_imports_flow_one_way():
    problems = violations(SRC)
    assert not problems, "\n".join(problems)


def test_every_top_level_module_has_a_layer():
    names = {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    assert names == set(LAYERS) - {"soilsource"}


def test_developers_layout_follows_the_layers():
    """DEVELOPERS.md draws the tree in the order of LAYERS (so the page cannot drift)."""
    page = (ROOT / "DEVELOPERS.md").read_text(encoding="utf-8")
    block = page.split("## Layout", 1)[1].split("```", 2)[1]
    drawn = [m for m in re.findall(r"\b([a-z_]+)(?:\.py|/)", block) if m in LAYERS[1:]]
    assert list(dict.fromkeys(drawn)) == list(LAYERS[1:])


# The checker itself, on small trees written for the purpose: it must catch what it claims.


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


TOY_LAYERS = ("pkg", "low", "mid", "high")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"low.py": "import pkg.high\n", "high.py": ""}, "pkg.low:1 imports pkg.high"),
        (
            {"low.py": "def f():\n    from pkg.high import g\n", "high.py": "def g(): ..."},
            "pkg.low:2 imports pkg.high",
        ),
        (
            {"mid/__init__.py": "", "mid/a.py": "from pkg import high\n", "high.py": ""},
            "pkg.mid.a:1 imports pkg.high",
        ),
        (
            {
                "mid/__init__.py": "",
                "mid/a.py": "from pkg.mid.b import x\ny = 1\n",
                "mid/b.py": "x = 1\ndef f():\n    from pkg.mid.a import y\n",
            },
            "import circle: pkg.mid.a -> pkg.mid.b -> pkg.mid.a",
        ),
        ({"low.py": "import pkg.nowhere\n"}, "pkg.low:1 imports pkg.nowhere, which does not"),
    ],
    ids=["module-level", "inside-function", "from-package", "circle", "missing"],
)
def test_the_checker_finds_bad_imports(tmp_path, files, expected):
    problems = violations(_tree(tmp_path, files), TOY_LAYERS)
    assert any(p.startswith(expected) for p in problems), problems


def test_the_checker_allows_downward_and_same_layer_imports(tmp_path):
    files = {
        "low.py": "from pkg import __doc__\n",
        "mid/__init__.py": "from pkg.mid.a import x\n",
        "mid/a.py": "import pkg.low\nx = 1\n",
        "high.py": "from pkg.mid import x\nfrom pkg import low, mid\n",
    }
    assert violations(_tree(tmp_path, files), TOY_LAYERS) == []


def test_the_checker_names_a_module_without_a_layer(tmp_path):
    with pytest.raises(KeyError, match="'stray'"):
        violations(_tree(tmp_path, {"stray.py": ""}), TOY_LAYERS)
