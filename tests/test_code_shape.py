"""Code shape of the `maetok` package, read with `ast` (nothing is imported): no import cycle among its
modules, counting imports inside functions; no file over 600 lines; no function over 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "maetok"
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """{dotted module name: file} of every .py file under `root`."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _absolute(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    """The absolute module a `from ... import` names, resolving relative imports against `name`."""
    if not node.level:
        return node.module or ""
    base = name.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The package modules that module `name` (file `path`) imports anywhere in its body, functions and
    `if TYPE_CHECKING` blocks included. `from a.b import c` is module a.b.c when that is a module, else a.b;
    a parent package is not counted for its submodule."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name, path.name == "__init__.py")
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in out if m in known and m != name}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    mods = modules(root)
    return {name: imports_of(path, name, set(mods)) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle [a, b, ..., a] of the directed graph, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def long_functions(path: Path, root: Path = PACKAGE, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """'file:line name (N lines)' of each function or method over `limit` lines, decorators excluded."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            n = node.end_lineno - node.lineno + 1
            if n > limit:
                out.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_import_cycle_among_maetok_modules():
    graph = import_graph()
    assert "maetok.config" in graph and graph["maetok.cli"], "the graph must see the package and its imports"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_file_over_600_lines():
    long = [f"{p.relative_to(PACKAGE.parent)} ({n} lines)" for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES]
    assert not long, f"split these files (at most {MAX_FILE_LINES} lines each): {', '.join(sorted(long))}"


def test_no_function_over_80_lines():
    long = [f for p in sorted(PACKAGE.rglob("*.py")) for f in long_functions(p)]
    assert not long, f"split these functions (at most {MAX_FUNCTION_LINES} lines each): {'; '.join(long)}"


# --- the checks themselves, on a small made-up package --------------------------------------------------
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_a_function_local_import_closes_a_cycle(tmp_path):
    root = _package(tmp_path, {
        "a.py": "from pkg.sub import b\n",
        "sub/__init__.py": "",
        "sub/b.py": "def f():\n    from .. import c\n",
        "c.py": "def g():\n    import pkg.a\n",
    })
    graph = import_graph(root)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]


def test_from_import_of_a_name_counts_its_module(tmp_path):
    root = _package(tmp_path, {"a.py": "from pkg.b import thing\n", "b.py": "thing = 1\n"})
    graph = import_graph(root)
    assert graph["pkg.a"] == {"pkg.b"} and find_cycle(graph) is None


@pytest.mark.parametrize("body, over", [(MAX_FUNCTION_LINES - 2, False), (MAX_FUNCTION_LINES - 1, True)])
def test_long_function_limit(tmp_path, body, over):
    text = "class K:\n    def f(self):\n" + "        x = 1\n" * body + "        return x\n"  # def + body + return
    root = _package(tmp_path, {"m.py": text})
    found = long_functions(root / "m.py", root)
    assert found == ([f"pkg/m.py:2 f ({MAX_FUNCTION_LINES + 1} lines)"] if over else [])
