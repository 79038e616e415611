"""The package's layers point down, and no module imports itself round a cycle.

Every `import` and `from ... import` in src/weitiao is read with `ast`, those deferred into functions included (a
deferred import still climbs the layers; it only hides the cycle from Python). Layers, top down:

- `cli` (and `__main__`), `api` and `ui`: the command line, the Python API (which the CLI calls) and the web UI;
- `workflows`: the stage scripts, imported only by the layer above;
- the core (`data`, `models`, `methods`, `training`, `evaluation`, `memory`, `serving`, `demo`, and the modules
  `config`, `runs`, `console`, `errors`, `testing`), which never imports a workflow or the CLI.
A workflow does not import another workflow either: what two stages share lives in the core.
"""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "weitiao"
TOP = {"weitiao.cli", "weitiao.__main__", "weitiao.api"}
TOP_PACKAGES = ("weitiao.ui",)  # the web UI, beside the CLI and the API


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports(name: str, path: Path, known: dict) -> list[tuple[str, int]]:
    """(imported weitiao module, line) for every import in the file, deferred ones included; `from pkg import
    mod` counts as importing pkg.mod where that is a module."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            if base.split(".")[0] == "weitiao":
                found += [(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base, node.lineno)
                          for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "weitiao"]
    return [(owner(target, known), line) for target, line in found if owner(target, known) not in ("", name)]


def runtime_nodes(tree: ast.AST):
    """Every node of the module, those under `if TYPE_CHECKING:` included: an import for annotations only still
    says which module knows about which, and a cycle through it is one a reader has to untangle."""
    yield from ast.walk(tree)


def owner(target: str, known: dict) -> str:
    """The module a dotted name lives in (`weitiao.runs.write_json` -> `weitiao.runs`)."""
    while target and target not in known:
        target = target.rsplit(".", 1)[0] if "." in target else ""
    return target


def layer(name: str) -> str:
    if name in TOP or name.startswith(TOP_PACKAGES):
        return "cli"
    if name == "weitiao.workflows" or name.startswith("weitiao.workflows."):
        return "workflows"
    return "core"


def graph() -> dict[str, list[tuple[str, int]]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_no_import_points_up():
    upward = []
    for name, targets in graph().items():
        for target, line in targets:
            if layer(name) == "core" and layer(target) != "core":
                upward.append(f"{name}:{line} imports {target} (the core never imports a workflow or the CLI)")
            elif layer(name) == "workflows" and layer(target) == "cli":  # the API counts as the CLI's layer
                upward.append(f"{name}:{line} imports {target}")
            elif layer(name) == layer(target) == "workflows" and target != "weitiao.workflows":
                upward.append(f"{name}:{line} imports {target} (workflows share through the core, not each other)")
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    edges = {name: {t for t, _ in targets} for name, targets in graph().items()}
    cycles = strongly_connected(edges)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """The components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_the_scan_sees_deferred_imports_and_cycles(tmp_path):
    """The scan itself: a deferred `from weitiao.workflows import x` inside a function is found, and one under
    `if TYPE_CHECKING:`, and a two-module cycle is reported (so a passing layering test means something)."""
    pkg = tmp_path / "weitiao"
    (pkg / "workflows").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "workflows" / "__init__.py").write_text("")
    (pkg / "workflows" / "sft.py").write_text("from weitiao import core\n")
    (pkg / "core.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from weitiao.workflows import "
                                 "sft\ndef f():\n    from weitiao.workflows import sft\n")  # both count, the type-only one too
    known = {"weitiao": pkg / "__init__.py", "weitiao.core": pkg / "core.py",
             "weitiao.workflows": pkg / "workflows" / "__init__.py",
             "weitiao.workflows.sft": pkg / "workflows" / "sft.py"}
    found = imports("weitiao.core", known["weitiao.core"], known)
    assert sorted(found) == [("weitiao.workflows.sft", 3), ("weitiao.workflows.sft", 5)]
    assert layer(found[0][0]) == "workflows"
    edges = {"weitiao.core": {"weitiao.workflows.sft"}, "weitiao.workflows.sft": {"weitiao.core"}}
    assert [sorted(c) for c in strongly_connected(edges)] == [["weitiao.core", "weitiao.workflows.sft"]]


def test_no_function_is_over_80_lines():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert not long, "\n".join(long)


def method_names() -> set[str]:
    from weitiao.methods import METHODS

    return set(METHODS)


def test_no_code_outside_methods_compares_a_method_name():
    """Outside methods/, code asks the method (`method_of(cfg.method).virtual_tokens`) and never compares its
    name. Allowed: config.py, where the compatibility rules are tables of names (data, not if-chains), and the
    memory estimator and planner, which take method names from the command line for models never loaded."""
    allowed = {"weitiao.config", "weitiao.memory.estimate", "weitiao.memory.plan", "weitiao.cli"}
    names, found = method_names(), []
    for name, path in modules().items():
        if name.startswith("weitiao.methods") or name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            constants = [c for side in [node.left, *node.comparators] for c in ast.walk(side)
                         if isinstance(c, ast.Constant) and c.value in names]
            if constants:
                found.append(f"{name}:{node.lineno} compares with {constants[0].value!r}")
    assert not found, "\n".join(found)
