"""The house rule: each room imports only rooms below it, and there is no circle.

Rooms are the package's top-level modules and subpackages, in layers from
the shared words at the bottom to the mitmproxy shell on top. A module may
import its own layer and any layer below; an import of a higher layer — even
one made only for type checking — fails here, naming the file and the line.
README's "Layout" section shows the same table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "addon" / "switchback"
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("words", frozenset({"vocabulary", "jsonsafe", "trail"})),
    ("knowledge", frozenset({"protocols", "providers", "recognise", "redact"})),
    ("policy", frozenset({"health", "accounting"})),
    ("state", frozenset({"state"})),
    ("config", frozenset({"config"})),
    ("plan", frozenset({"plan"})),
    ("engine", frozenset({"engine"})),
    ("shell", frozenset({"shell", "addon", "status", "metrics", "tracing", "cli", "trust",
                         "entry", "__init__"})),
)
LEVEL = {room: level for level, (_, rooms) in enumerate(LAYERS) for room in rooms}


def room_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_rooms(path: Path) -> list[tuple[int, str]]:
    """(line, room) for every import of another room of the package."""
    tree = ast.parse(path.read_text(), str(path))
    depth = len(path.relative_to(PACKAGE).parts) - 1  # folders below the package
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb to the package, then name the room
                if node.level <= depth:
                    continue  # within its own subpackage
                parts = (node.module or "").split(".")
                names = [parts[0]] if parts[0] else [a.name for a in node.names]
            elif (node.module or "").startswith("switchback."):
                names = [node.module.split(".")[1]]
            elif node.module == "switchback":
                names = [a.name for a in node.names]
            else:
                continue
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[1]) for a in node.names
                      if a.name.startswith("switchback.")]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_room_has_a_layer():
    rooms = {room_of(path) for path in MODULES}
    assert rooms <= LEVEL.keys(), f"rooms without a layer: {sorted(rooms - LEVEL.keys())}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_from_a_higher_layer(path: Path):
    mine = LEVEL[room_of(path)]
    upward = [f"line {line}: {room} ({LAYERS[LEVEL[room]][0]})"
              for line, room in imported_rooms(path)
              if room != room_of(path) and LEVEL.get(room, -1) > mine]
    assert not upward, f"{path.name} ({LAYERS[mine][0]}) imports upward: {upward}"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The package's modules `path` imports, as dotted names below the package."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    package = list(parts[:-1])  # a module's package; an __init__'s is its own folder
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
            elif (node.module or "").split(".")[0] == "switchback":
                base = []
                node = ast.ImportFrom((node.module or "").partition(".")[2] or None,
                                      node.names, 0)
            else:
                continue
            module = [*base, *(node.module.split(".") if node.module else [])]
            found.add(".".join(module))
            found.update(".".join([*module, alias.name]) for alias in node.names)
    return found


def test_no_circle_between_modules():
    """Within a layer rooms may use each other, but never in a circle."""
    names = {module_name(path): path for path in MODULES}
    edges = {name: {m for m in imported_modules(path) if m in names and m != name}
             for name, path in names.items()}
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        for target in sorted(edges[node]):
            if target in trail or target == node:
                cycle = trail[trail.index(target):] if target in trail else []
                pytest.fail("import circle: " + " → ".join([*cycle, node, target]))
            if target not in done:
                visit(target, [*trail, node])
        done.add(node)

    for name in sorted(edges):
        if name not in done:
            visit(name, [])
