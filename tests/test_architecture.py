"""The import arrows of docs/ARCHITECTURE.md, read from the source (every import, in functions and under
TYPE_CHECKING too): harvest -> hub_sync <- space; space reaches into harvest only to run a model live; hub_sync
imports neither; nothing shipped imports testkit/; no module imports itself back through others.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from testkit.support import REPO

PACKAGES = ("harvest", "hub_sync", "space")
# space runs models live through harvest's loader (space/live) and explainer (the Explain button), nothing else.
SPACE_MAY_IMPORT = ("harvest.models", "harvest.explain")
# testkit/ (what tests and benchmarks share) is never shipped: nothing shipped may import it.
NEVER_IMPORTS = {
    "hub_sync": {"harvest", "space", "app", "testkit"},
    "harvest": {"space", "app", "testkit"},
    "space": {"app", "testkit"},
    "app": {"testkit"},
}


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path = REPO) -> dict[str, Path]:
    files = [path for package in PACKAGES for path in sorted((root / package).rglob("*.py"))] + [root / "app.py"]
    return {module_name(path, root): path for path in files if path.exists()}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules `path` (module `name`) imports anywhere in it: `from a.b import c` is a.b.c when that is
    a module, else a.b."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
    return {module for module in found if module in known and module != name}


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """Each shipped module with the project modules it imports (testkit's among them)."""
    modules = project_modules(root)
    known = set(modules) | {module_name(path, root) for path in (root / "testkit").glob("*.py")}
    return {name: imports_of(path, name, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def follows_the_arrows(importer: str, target: str) -> bool:
    source, destination = importer.split(".")[0], target.split(".")[0]
    if (source, destination) == ("space", "harvest"):
        return target.startswith(SPACE_MAY_IMPORT)
    return destination not in NEVER_IMPORTS[source]


def arrows_broken(graph: dict[str, set[str]]) -> list[str]:
    """Every import against the arrows, as `importer -> imported`."""
    return [
        f"{importer} -> {target}"
        for importer, targets in sorted(graph.items())
        for target in sorted(targets)
        if not follows_the_arrows(importer, target)
    ]


def test_imports_follow_the_arrows():
    assert arrows_broken(import_graph()) == []


def test_no_import_cycles_between_modules():
    assert cycles(import_graph()) == []


def test_test_modules_import_testkit_never_each_other():
    tests = REPO / "tests"
    test_modules = {path.stem for path in tests.glob("test_*.py")}
    known = test_modules | {path.stem for path in tests.glob("*.py")}
    shared = {
        f"{path.name} -> {module}"
        for path in sorted(tests.glob("test_*.py"))
        for module in imports_of(path, path.stem, known)
        if module in test_modules
    }
    assert shared == set(), "move what they share to testkit/"


def test_the_checks_see_a_broken_arrow_and_a_cycle_hidden_in_type_checking(tmp_path):
    files = {
        "hub_sync/__init__.py": "",
        "hub_sync/format.py": "from harvest import plan\n",
        "harvest/__init__.py": "",
        "harvest/plan.py": "from .run import go\n",
        "harvest/run.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from harvest.plan import Plan\n",
        "space/__init__.py": "",
        "space/views.py": "def view():\n    from harvest import corpus\n    from harvest.models import load_model\n",
        "space/render.py": "from testkit.planted import write_planted_dataset\n",
        "testkit/__init__.py": "",
        "testkit/planted.py": "",
        "harvest/corpus.py": "",
        "harvest/models.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert arrows_broken(graph) == [
        "hub_sync.format -> harvest.plan",
        "space.render -> testkit.planted",
        "space.views -> harvest.corpus",
    ]
    assert cycles(graph) == [["harvest.plan", "harvest.run"]]


def mapped_paths(text: str, root: Path = REPO) -> tuple[set[str], set[str]]:
    """What docs/ARCHITECTURE.md's map names: the files and folders in the first column of the table under each
    `### folder/` heading (relative to that folder, else to the repository), and the paths the list of files still
    to come names."""
    tables: set[str] = set()
    coming: set[str] = set()
    folder = None
    for line in text.splitlines():
        if line.startswith("#"):
            heading = re.match(r"### `?([\w/]+/)", line)
            folder = heading.group(1) if heading else ("coming" if line.startswith("### Coming") else None)
        elif folder == "coming":
            coming |= set(re.findall(r"`([\w/]+\.py)`", line))
        elif folder and line.startswith("| `"):
            for name in re.findall(r"`([\w./]+)`", line.split("|")[1]):
                tables.add(f"{folder}{name}" if (root / folder / name).exists() else name)
    return tables, coming


def test_the_architecture_map_names_every_module_and_only_modules_that_exist():
    tables, coming = mapped_paths((REPO / "docs" / "ARCHITECTURE.md").read_text())
    assert tables, "docs/ARCHITECTURE.md has no map"
    assert {path for path in tables if not (REPO / path).exists()} == set(), "the map names files that do not exist"
    folders = tuple(path for path in tables if path.endswith("/"))
    modules = {str(path.relative_to(REPO)) for path in project_modules().values() if path.name != "__init__.py"}
    unmapped = {module for module in modules - tables - coming if not module.startswith(folders)}
    assert unmapped == set(), "add a line for each to docs/ARCHITECTURE.md's map"
