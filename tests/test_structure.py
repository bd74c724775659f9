"""The code keeps the shape the architecture table (docs/architecture.md) gives it: each module
imports only what the table allows, there are no import cycles, and colorizing loads nothing of
training."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "zhangcolor"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def our_imports(path: Path) -> set[str]:
    """The zhangcolor modules a file imports, lazily or not (the package root's version
    attribute aside), as names relative to the package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.startswith("zhangcolor."):
                found.add(name.removeprefix("zhangcolor."))
    return found


GRAPH = {
    module_name(p): our_imports(p)
    for p in PACKAGE.rglob("*.py")
    if module_name(p) not in ("", "__main__")
}


def allowed_by_table() -> dict[str, set[str] | None]:
    """The architecture table: module -> what it may import (None: anything)."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = page.split("\n## Modules\n", 1)[1].split("\n## ", 1)[0]
    allowed = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([\w.]+)`", cells[0])
        rule = None if cells[2] == "any" else set(re.findall(r"`([\w.]+)`", cells[2]))
        if rule is not None and "each other" in cells[2]:
            rule |= {f"models.{n}" for n in names[1:]}  # a package's modules among themselves
        for name in names:
            allowed[name if name == names[0] else f"{names[0]}.{name}"] = rule
    return allowed


def test_every_module_imports_only_what_the_architecture_table_allows():
    allowed = allowed_by_table()
    missing = sorted(set(GRAPH) - set(allowed))
    assert not missing, f"modules missing from docs/architecture.md's table: {missing}"
    for module, imports in sorted(GRAPH.items()):
        rule = allowed[module]
        if rule is not None:
            extra = sorted(i for i in imports if i not in rule and i.split(".")[0] not in rule)
            assert not extra, f"{module} imports {extra}, which docs/architecture.md does not allow"


def test_there_are_no_import_cycles():
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import cycle: {' -> '.join([*trail, module])}"
        state[module] = "open"
        for dependency in GRAPH.get(module, ()):
            visit(dependency, [*trail, module])
        state[module] = "done"

    for module in GRAPH:
        visit(module, [])


def test_colorizing_a_photo_loads_nothing_of_training():
    """torch itself imports torch.distributed and torch.utils.data (torch 2.x), so the check is
    on zhangcolor's own modules: colorizing must not load the loop, the data pipeline, the
    prior's estimation, the losses or the evaluation."""
    code = (
        "import sys, json; import zhangcolor.colorize; "
        "from zhangcolor import Colorizer; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('zhangcolor'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    training = {f"zhangcolor.{m}" for m in ("train", "data", "prior", "split", "loss", "encode")}
    assert not loaded & (training | {"zhangcolor.evaluate", "zhangcolor.serve"})
    assert "zhangcolor.colorize" in loaded and "zhangcolor.model_file" in loaded


def test_the_command_line_starts_without_torch():
    code = "import sys, zhangcolor.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
