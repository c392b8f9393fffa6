"""The layout's rules, checked: layers point down, no import cycles, rooms stay small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "odenet"
MAX_MODULE_LINES = 400
MAX_TRAINER_LINES = 190


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every odenet module ``path`` imports, at the top or inside functions (a lazy import can hide a cycle)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(paths)) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_modules():
    graph = import_graph()
    # A package imports its own modules (odenet.models registers its backbones); anything else is a cycle.
    graph = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_a_warehouse():
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {m: n for m, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_trainer_holds_the_loop_only():
    tree = ast.parse((PACKAGE / "train" / "trainer.py").read_text())
    trainer = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    assert trainer.end_lineno - trainer.lineno + 1 <= MAX_TRAINER_LINES


def test_import_linter_contracts_hold():
    """pyproject.toml's contracts: layers point down, and the reports import no torch."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stdout[-3000:]


ROOT = PACKAGE.parent


def layout_block() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    return text.split("## Layout", 1)[1].split("```", 2)[1]


def test_the_layout_in_docs_names_every_module_and_nothing_else():
    listed = {line.split()[0] for line in layout_block().splitlines() if line.startswith("odenet/")}
    modules = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    assert sorted(modules - listed) == [], "modules missing from docs/architecture.md's Layout"
    assert sorted(listed - modules) == [], "docs/architecture.md's Layout names modules that do not exist"


def test_the_readme_names_every_wing_and_points_at_the_design():
    readme = (ROOT / "README.md").read_text()
    wings = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert {w for w in wings if f"odenet/{w}/" not in readme} == set()
    assert "docs/architecture.md" in readme and "docs/architecture.md" in (ROOT / "pyproject.toml").read_text()


def test_torchdiffeqs_internals_are_imported_in_one_module_only():
    def private_imports(path: Path) -> list[str]:
        found = []
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [n for n in names if n.startswith("torchdiffeq._impl")]
        return found

    importers = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if private_imports(p)}
    assert importers == {"odenet/solve/torchdiffeq_api.py"}


def test_a_torchdiffeq_without_the_internals_fails_in_one_sentence():
    code = ("import torchdiffeq._impl.misc as m; del m._compute_error_ratio\n"
            "try:\n    import odenet.solve.torchdiffeq_api\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    assert out.startswith("torchdiffeq ") and "_compute_error_ratio" in out
    assert out.endswith("pip install 'torchdiffeq==0.2.5'") and out.count(". ") == 0 and "\n" not in out


def test_the_solver_wing_imports_no_model_and_no_regulariser():
    graph = import_graph()
    solve = {m: targets for m, targets in graph.items() if m.startswith("odenet.solve")}
    above = ("odenet.models", "odenet.data", "odenet.train", "odenet.reports", "odenet.run", "odenet.evaluate",
             "odenet.grid", "odenet.dynamics")
    assert {m: sorted(t for t in targets if t.startswith(above)) for m, targets in solve.items()
            if any(t.startswith(above) for t in targets)} == {}
