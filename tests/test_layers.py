"""The layer rules of ARCHITECTURE.md, checked on the source (``ast``, nothing is imported).

Every import of every shipped module counts, including the ones inside
functions and ``importlib.import_module("literal")``: a lazy import still ties
the layers together.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("constellation", "verifiers", "roles", "launch")  # the packages pyproject.toml installs
PROJECT = (*SHIPPED, "bench", "tests")

# Bottom to top: a module may import its own layer and the layers below it.
# A name belongs to the layer of its longest matching prefix.
LAYERS = [
    ("protocol", ("constellation", "constellation.protocol", "constellation.presets")),
    ("algorithms", ("constellation.algorithms",)),
    ("domain: verifiers", ("verifiers",)),
    ("domain: tasks", ("constellation.tasks",)),  # tasks may import verifiers, not the reverse
    ("runtime", ("constellation.runtime",)),
    ("models", ("constellation.models",)),
    ("roles", ("roles",)),
    ("apps", ("launch",)),
    ("bench and tests", ("bench", "tests")),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
HEAVY = ("torch", "transformers", "peft", "vllm", "bitsandbytes", "trl")  # only models and roles import these
MAX_FILE_LINES, MAX_FUNCTION_LINES = 500, 60


def layer_of(module: str) -> str | None:
    best, best_len = None, -1
    for name, prefixes in LAYERS:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = name, len(p)
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def shipped_files(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the file; ``from a import b`` gives "a.b"
    (b may be a module or a name in a: either way it lies in a's layer or below it)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and _called_name(node) in ("import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                out.append((node.lineno, node.args[0].value))
    return out


def _called_name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def test_every_shipped_module_has_a_layer():
    orphans = [module_name(p) for p in shipped_files(*SHIPPED) if layer_of(module_name(p)) is None]
    assert not orphans, f"modules in no layer (add them to LAYERS here and to ARCHITECTURE.md): {orphans}"


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in shipped_files(*SHIPPED):
        own = layer_of(module_name(path))
        for line, name in imports(path):
            target = layer_of(name) if name.split(".")[0] in PROJECT else None
            if target is not None and RANK[target] > RANK[own]:
                upward.append(f"{path.relative_to(ROOT)}:{line}: {own} imports {name} ({target})")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_runtime_reaches_tasks_and_verifiers_only_through_the_registry():
    found = [f"{p.relative_to(ROOT)}:{line}: {name}" for p in shipped_files("constellation/runtime")
             for line, name in imports(p) if layer_of(name) in ("domain: verifiers", "domain: tasks")]
    assert not found, "the runtime imports a task or verifier module (use registry.resolve_task):\n" + "\n".join(found)


def test_heavy_libraries_are_imported_only_by_models_and_roles():
    found = [f"{p.relative_to(ROOT)}:{line}: {name}" for p in shipped_files(*SHIPPED)
             if layer_of(module_name(p)) not in ("models", "roles")
             for line, name in imports(p) if name.split(".")[0] in HEAVY]
    assert not found, "torch & co. outside constellation/models and roles/:\n" + "\n".join(found)


def test_roles_never_touch_zmq():
    found = [f"{p.relative_to(ROOT)}:{line}: {name}" for p in shipped_files("roles")
             for line, name in imports(p) if name.split(".")[0] == "zmq"]
    assert not found, "roles talk through constellation.protocol.transport, not zmq:\n" + "\n".join(found)


def import_graph(*packages: str) -> dict[str, dict[str, int]]:
    """module -> {module it imports: first line}, over the shipped modules only. An
    import names the longest shipped module it starts with: ``from a.b import c``
    is an edge to a.b.c when that is a module, else to a.b (c is a name in it)."""
    files = {module_name(p): p for p in shipped_files(*packages)}
    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        edges = graph.setdefault(module, {})
        for line, name in imports(path):
            parts = name.split(".")
            target = next((t for t in (".".join(parts[:i]) for i in range(len(parts), 0, -1)) if t in files), None)
            if target not in (None, module):
                edges.setdefault(target, line)
    return graph


def import_circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The modules that import each other in a circle: the strongly connected
    components of more than one module (Tarjan), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:  # v is the root of a component: it is what lies above v on the stack
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(circles)


def shortest_circle(start: str, graph: dict[str, dict[str, int]]) -> list[str]:
    """[start, ..., start]: the fewest imports that lead from ``start`` back to
    it (breadth-first); [] when none do."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        ahead = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    ahead.append(w)
        frontier = ahead
    return []


def circle_report(graph: dict[str, dict[str, int]]) -> list[str]:
    """One paragraph per circle: its modules, then its shortest circle, each step with its line."""
    out = []
    for component in import_circles(graph):
        circle = shortest_circle(component[0], graph)
        steps = [f"  {a.replace('.', '/')}.py:{graph[a][b]} imports {b}" for a, b in zip(circle, circle[1:])]
        out.append(f"{len(component)} modules: {', '.join(component)}; the shortest circle from {circle[0]}:\n"
                   + "\n".join(steps))
    return out


def test_no_import_circles():
    # a circle has no bottom: neither module can be read, tested or moved without
    # the other, and which one runs first decides what is defined. Move what both
    # need into the lower one, or into a module below both.
    found = circle_report(import_graph(*SHIPPED))
    assert not found, "modules that import each other (anywhere in the file):\n" + "\n".join(found)


def test_the_circle_finder_names_every_circle_and_nothing_else():
    graph = {"a": {"b": 1}, "b": {"c": 2, "d": 3}, "c": {"a": 4}, "d": {}, "e": {"f": 5, "a": 6}, "f": {"e": 7},
             "g": {"g2": 8}, "g2": {}}
    assert import_circles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert shortest_circle("a", graph) == ["a", "b", "c", "a"]
    assert shortest_circle("d", graph) == []
    assert circle_report(graph)[1] == "2 modules: e, f; the shortest circle from e:\n  e.py:5 imports f\n  f.py:7 imports e"
    assert import_circles({k: {} for k in graph}) == []


def test_the_import_graph_counts_lazy_relative_and_plain_imports(tmp_path, monkeypatch):
    sources = {"__init__": "", "a": "def f():\n    from .b import thing\n", "b": "import pkg.c\n",
               "c": "from pkg import a\n", "d": "from . import c\n"}
    (tmp_path / "pkg").mkdir()
    for name, text in sources.items():
        (tmp_path / "pkg" / f"{name}.py").write_text(text)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    graph = import_graph("pkg")
    assert graph == {"pkg": {}, "pkg.a": {"pkg.b": 2}, "pkg.b": {"pkg.c": 1}, "pkg.c": {"pkg.a": 1},
                     "pkg.d": {"pkg.c": 1}}
    assert import_circles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_shipped_import_graph_has_the_lazy_imports():
    graph = import_graph(*SHIPPED)
    assert "launch.study" in graph["launch.cli"]  # imported inside the study command only
    assert "launch.supervisor" in graph["launch.up"] and "launch.up" not in graph["launch.supervisor"]


def _strings(path: Path) -> list[tuple[int, str]]:
    return [(n.lineno, n.value) for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_constellation_names_no_higher_module_in_a_string():
    # an import path in a string ("roles.verifier_dsl:DslVerifier") is an upward import
    # that the import check cannot see; the registry takes them from entry points instead
    import_path = re.compile(r"^(roles|verifiers|launch)(\.\w+)+(:\w+)?$")
    mention = re.compile(r"\b(roles|verifiers|launch)\.\w")
    from constellation.protocol.config import describe
    config_keys = {key for key, _, _ in describe()}  # "launch.launcher" is a field of [launch], not a module
    found = []
    for path in shipped_files("constellation"):
        strict = path.relative_to(ROOT).as_posix() in ("constellation/runtime/registry.py",
                                                       "constellation/protocol/config.py")
        found += [f"{path.relative_to(ROOT)}:{line}: {text!r}" for line, text in _strings(path)
                  if (import_path.match(text.strip()) and text.strip() not in config_keys)
                  or (strict and mention.search(text))]
    assert not found, "module names of higher layers in strings:\n" + "\n".join(found)


def builtin_names() -> set[str]:
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    return {name for group, eps in groups.items() if group.startswith("constellation.") for name in eps}


def _is_impl(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "impl") or (isinstance(node, ast.Name) and node.id == "impl")


def _constants(node: ast.expr) -> list[str]:
    elts = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def test_no_branch_on_a_builtin_implementation_name():
    # a branch like `trainer.impl == "dpo"` treats a plugin differently from the
    # built-in it imitates; the implementation declares what it needs instead
    names, found = builtin_names(), []
    for path in shipped_files(*SHIPPED):
        if path.relative_to(ROOT).as_posix() == "constellation/runtime/registry.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(_is_impl(x) for x in (node.left, *node.comparators)):
                hit = sorted({c for x in (node.left, *node.comparators) for c in _constants(x)} & names)
                if hit:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: compares impl with {hit}")
    assert not found, "branches on built-in implementation names:\n" + "\n".join(found)


def size_offenders() -> list[str]:
    found = []
    for path in shipped_files(*SHIPPED, "bench"):
        rel, text = path.relative_to(ROOT), path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            found.append(f"{rel}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    found.append(f"{rel}:{node.lineno}: {node.name}() is {n} lines")
    return found


def test_no_file_over_500_lines_and_no_function_over_60_outside_tests():
    found = size_offenders()
    assert not found, f"over {MAX_FILE_LINES} lines per file or {MAX_FUNCTION_LINES} per function:\n" + "\n".join(found)
