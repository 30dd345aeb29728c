"""The package's structure: no import cycle, rooms on floors, documented names resolve, old paths.

The cycle check reads every module under ``src/firec`` with :mod:`ast`: imports
at the top, inside functions and under ``TYPE_CHECKING`` all count, because
each is a dependency a reader must follow. A package's ``__init__`` (its door)
importing names from its own modules is not a dependency of the package's
modules on the door, so those arrows are left out. The same arrows, between
rooms (the packages under ``firec``), must point down the floors that
docs/architecture.md lists.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import firec
from firec import _moved

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "firec"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


def _imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The modules of firec that module ``name`` imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from firec.vm import config` imports the module firec.vm.config
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set(_imports(name, path, known))
        if path.name == "__init__.py":  # a door importing its own rooms
            edges = {e for e in edges if not e.startswith(name + ".")}
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_modules() -> None:
    graph = _graph()
    assert len(graph) > 50, "the module walk found too little: is src/firec where it was?"
    assert _cycles(graph) == []


def test_the_cycle_check_sees_imports_in_functions_and_type_checking() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from firec.vm.config import Config\n"
        "def f():\n    from firec.snapshots import snapshot\n"
    )
    path = ROOT / "tests" / "_layout_probe.py"
    try:
        path.write_text(source)
        known = set(_modules())
        assert set(_imports("firec.probe", path, known)) == {
            "firec.vm.config",
            "firec.snapshots.snapshot",
        }
    finally:
        path.unlink()


# -- rooms and floors --------------------------------------------------------------------------

ARCHITECTURE = ROOT / "docs" / "architecture.md"
#: The room of firec's door, errors.py and the top-level ``_`` modules.
GROUND = "firec/"


def _room(module: str) -> str:
    """The room of ``module``: its package under firec; a top-level module or ``_`` one: ground."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1].startswith("_") or not (PACKAGE / parts[1]).is_dir():
        return GROUND
    return parts[1]


def _floors() -> list[str]:
    """The rooms, lowest first, as the floors of docs/architecture.md list them (highest first)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.partition("\n## The floors\n")[2].partition("\n## ")[0]
    block = re.search(r"```text\n(.*?)```", section, re.DOTALL)
    assert block, f"{ARCHITECTURE.name} has no floors (a text block under '## The floors')"
    floors = [line.split()[0] for line in block.group(1).splitlines() if line.strip()]
    assert len(floors) == len(set(floors)), f"a room stands on two floors: {floors}"
    assert floors[-1] == GROUND, f"the lowest floor is {floors[-1]!r}, not the ground floor"
    return floors[::-1]


def _arrows_up(graph: dict[str, set[str]], floors: list[str]) -> list[str]:
    """Every import of a module from a room above its own."""
    rank = {room: i for i, room in enumerate(floors)}
    return [
        f"{module} ({_room(module)}) imports {target} ({_room(target)})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if rank[_room(target)] > rank[_room(module)]
    ]


def test_every_arrow_between_rooms_points_down_the_floors_of_the_architecture_doc() -> None:
    floors = _floors()
    graph = _graph()
    unplaced = {_room(m) for m in graph} - set(floors)
    assert not unplaced, f"rooms that docs/architecture.md puts on no floor: {sorted(unplaced)}"
    up = _arrows_up(graph, floors)
    assert not up, "imports of rooms above (docs/architecture.md, The floors):\n" + "\n".join(up)


def test_the_floor_check_reads_the_doc_and_sees_an_arrow_up() -> None:
    floors = _floors()
    assert len(floors) > 8 and floors.index("snapshots") < floors.index("vm")
    assert {_room("firec"), _room("firec.errors"), _room("firec._proc")} == {GROUND}
    assert _room("firec.vm._registry.claim") == "vm"
    graph = {
        "firec.snapshots.snapshot": {"firec.vm.config", "firec.errors"},
        "firec.vm.config": {"firec.snapshots.snapshot", "firec._proc"},
        "firec._proc": set(),
    }
    assert _arrows_up(graph, floors) == [
        "firec.snapshots.snapshot (snapshots) imports firec.vm.config (vm)"
    ]


def test_every_layer_is_a_package_with_a_door() -> None:
    for layer in ("api", "vm", "snapshots", "host", "network", "images", "cli", "testing"):
        door = PACKAGE / layer / "__init__.py"
        assert door.is_file(), layer
        doc = ast.get_docstring(ast.parse(door.read_text(encoding="utf-8")))
        assert doc and len(doc) > 80, f"firec.{layer} has no docstring saying what it holds"
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    public = [n for n in top if not n.startswith("_")]
    assert public == ["errors.py"], f"public modules left at the top: {public}"


def _documented_names() -> set[str]:
    """``firec.x.Y`` names that README.md, docs/ and examples/ show users."""
    texts = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "examples").rglob("*")]
    names: set[str] = set()
    for path in texts:
        text = path.read_text(encoding="utf-8")
        # a name followed by "=" or "-" is a kernel argument (firec.agent_token=T), not Python
        names.update(re.findall(r"\bfirec(?:\.[A-Za-z_]\w*)+(?![\w=-])", text))
        imports = r"from (firec[\w.]*) import (?:\(([^)]*)\)|([\w, ]+))"
        for module, grouped, inline in re.findall(imports, text):
            for item in (grouped or inline).split(","):
                name = item.split(" as ")[0].strip()
                if name:
                    names.add(f"{module}.{name}")
    return names


def _resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_every_name_the_docs_use_resolves() -> None:
    names = _documented_names()
    assert len(names) > 40, "the docs scan found too little"
    unresolved = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for name in sorted(names):
            # file names (firec.md), loggers (firec.vmm) and the test guest's
            # kernel arguments (firec.echo=...) are not Python names
            if name.endswith((".json", ".py", ".md", ".socket", ".log")) or name in {
                "firec.echo",
                "firec.exit",
                "firec.md",
                "firec.vmm",
                "firec.machine",
            }:
                continue
            try:
                _resolve(name)
            except (ImportError, AttributeError, DeprecationWarning) as exc:
                unresolved.append(f"{name}: {exc!r}")
    assert unresolved == []


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_old_module_paths_still_import_the_same_module(old: str) -> None:
    code = (
        "import importlib, warnings\n"
        "with warnings.catch_warnings(record=True) as said:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module('firec.{old}')\n"
        f"new = importlib.import_module({_moved.MOVED[old]!r})\n"
        "assert old is new, (old, new)\n"
        f"assert new.__spec__.name == {_moved.MOVED[old]!r}, new.__spec__\n"
        "assert any(issubclass(w.category, DeprecationWarning) and "
        f"{_moved.MOVED[old]!r} in str(w.message) for w in said), said\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_old_paths_of_submodules_are_the_same_objects() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from firec.models.drive import Drive  # type: ignore[import-not-found]
    from firec.api.models.drive import Drive as NewDrive

    assert Drive is NewDrive
    assert firec.models is firec.api.models
