"""The package imports in one direction: no module imports one that imports it back, even inside a function."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "cmpstore"


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """Every cmpstore module that ``path`` imports, at the top or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in modules else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    # A package's __init__ re-exports its modules; importing a module of a package is not importing the package.
    return {module for module in found & modules if module != name and not name.startswith(module + ".")}


def test_the_import_graph_has_no_cycle():
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: imports(path, set(paths)) for name, path in paths.items()}
    cycles = []

    def visit(name, trail):
        for imported in sorted(graph[name]):
            if imported in trail:
                cycles.append(" -> ".join([*trail[trail.index(imported) :], imported]))
            elif imported not in finished:
                visit(imported, [*trail, imported])
        finished.add(name)

    finished: set[str] = set()
    for name in sorted(graph):
        if name not in finished:
            visit(name, [name])
    assert cycles == []
