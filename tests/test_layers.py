"""The package's layers, read from its source: no private name crosses a package boundary, no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "qwen_embed"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _package(module: str) -> str:
    path = MODULES[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every import in ``module``, lazy ones included."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names if alias.name.startswith("qwen_embed")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package(module).split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not source.startswith("qwen_embed"):
                continue
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                if candidate in MODULES:  # `from . import _config`: a module
                    found.append((candidate, None, node.lineno))
                else:
                    found.append((source, alias.name, node.lineno))
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_crossings() -> list[str]:
    """Imports of a ``_private`` name or module from another package (``qwen_embed._x`` modules are neutral)."""
    bad = []
    for module in MODULES:
        here = _package(module)
        for source, name, line in _imports(module):
            there = _package(source) if source in MODULES else source.rpartition(".")[0]
            if there == here:
                continue
            below = source.removeprefix("qwen_embed").strip(".").split(".")
            private_module = any(_private(part) for part in below[1:]) or (
                len(below) >= 1 and _private(below[0]) and there != "qwen_embed"
            )
            if (name is not None and _private(name)) or private_module:
                bad.append(
                    f"{MODULES[module].relative_to(ROOT.parent)}:{line} imports {source}{'.' + name if name else ''}"
                )
    return bad


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for source, _name, _line in _imports(module):
            if source in MODULES and source != module and source != "qwen_embed":
                graph[module].add(source)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_private_name_crosses_a_package_boundary() -> None:
    assert private_crossings() == []


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(import_graph()) == []


def test_engines_do_not_import_the_hub() -> None:
    graph = import_graph()
    offending = sorted(f"{m} -> {d}" for m in graph if m.startswith("qwen_embed.engines") for d in graph[m]
                       if d.startswith("qwen_embed.hub"))  # fmt: skip
    assert offending == []


def test_the_checks_can_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative controls: a planted crossing and a planted cycle are found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    planted = ROOT / "engines" / "_planted_for_test.py"
    monkeypatch.setitem(MODULES, "qwen_embed.engines._planted_for_test", planted)
    source = "from ..hub.download import _private_helper\nfrom ..interfaces import _server_http\n"
    monkeypatch.setattr(Path, "read_text", _reader(planted, source))
    found = private_crossings()
    assert any("_planted_for_test.py:1 imports qwen_embed.hub.download._private_helper" in f for f in found)
    assert any("_planted_for_test.py:2 imports qwen_embed.interfaces._server_http" in f for f in found)


def _reader(planted: Path, source: str):  # type: ignore[no-untyped-def]
    original = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
        return source if self == planted else original(self, *args, **kwargs)

    return read_text
