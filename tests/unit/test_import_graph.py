"""The framework package has no import circle: every module of `shared` can be read (and imported) after the
modules it uses, so no import hides inside a function to break a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "shared"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every `shared...` module `path` imports, wherever the import stands (in a function or under
    TYPE_CHECKING too: a cycle hidden there is still a cycle)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{a.name}" for a in node.names} & known
            found |= submodules
            # `from package import submodule` needs the submodule, not what the package's __init__ imports
            if node.module in known and len(submodules) < len(node.names):
                found.add(node.module)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, known) - {name} for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_a_submodule_import_is_not_an_import_of_the_package(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("from pkg import sub\nfrom pkg import thing\n")
    assert imports_of(source, {"pkg", "pkg.sub"}) == {"pkg", "pkg.sub"}
    source.write_text("from pkg import sub\n")
    assert imports_of(source, {"pkg", "pkg.sub"}) == {"pkg.sub"}


def test_the_checker_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_shared_has_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("pure", ["shared.decisions", "shared.schedule", "shared.retry_policy", "shared.vocabulary"])
def test_pure_modules_do_no_io(pure: str) -> None:
    """The decision core and the schedule math import no driver: they cannot touch a server."""
    source = modules()[pure].read_text()
    tree = ast.parse(source)
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"asyncpg", "aio_pika", "aiormq", "socket", "urllib", "http"}, names
