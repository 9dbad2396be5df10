"""The house rules of the package (docs/architecture.md), checked from the source with `ast`:
no import circle between modules (imports inside functions included), no import that runs back
up a floor, imports inside functions only for optional heavy dependencies, and small files."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "medseg"

# Floors, lowest first: a module may import from its own floor and the floors below, never above.
FLOORS = [
    {"case", "errors", "atomic", "locks", "manifest", "device", "distributed"},
    {"io"},
    {"data"},
    {"nets"},
    {"evaluation"},
    {"runs"},
    {"report"},
    {"planning"},
    {"inference"},
    {"training"},
    {"api", "demo", "serve"},
    {"cli", "cli_serve", "__main__", "__init__"},
]
# Third-party packages that may be imported inside a function: optional or slow to import.
OPTIONAL = {"monai", "onnx", "onnxruntime", "einops", "highdicom", "fastapi", "uvicorn", "matplotlib",
            "torch.utils.tensorboard", "tensorboard", "pydicom", "playwright", "SimpleITK", "nibabel",
            "torch._dynamo", "torch.nn.parallel"}  # the last two: slow to import, needed by few runs
# medseg modules that may import medseg lazily, and why: the CLI answers --help before torch loads,
# and so must the package it lives in (its face imports `medseg.api` on first use).
LAZY_MEDSEG = {"medseg.cli", "medseg.cli_serve", "medseg"}
MAX_LINES = 400
MAX_LINES_LOOP = 300  # the training loop's file


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py")}


def imports_of(name: str, path: Path) -> list[tuple[str, bool]]:
    """(imported medseg module or third-party name, whether the import sits inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, nested) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if child.module:
                    found.append((target, nested))
                for alias in child.names:  # `from . import x` may name a submodule
                    found.append((f"{target}.{alias.name}", nested))
            visit(child, inner)

    visit(tree, False)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target, _ in imports_of(name, path):
            if target in mods and target != name:
                edges[name].add(target)
    return edges


def floor_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for level, names in enumerate(FLOORS):
        if top in names:
            return level
    raise AssertionError(f"{module}: its room is on no floor; add it to FLOORS and docs/architecture.md")


def test_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(circle))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node)


def test_no_import_runs_back_up_a_floor():
    wrong = []
    for module, targets in graph().items():
        for target in targets:
            # a package's face re-exports its own modules; a module may import its package's face
            if target.startswith(module + ".") or module.startswith(target + "."):
                continue
            if floor_of(target) > floor_of(module):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that run up a floor: " + ", ".join(sorted(wrong))


def test_imports_inside_functions_only_for_optional_dependencies():
    wrong = []
    for name, path in modules().items():
        for target, nested in imports_of(name, path):
            if not nested:
                continue
            if target.startswith("medseg"):
                if name not in LAZY_MEDSEG:
                    wrong.append(f"{name}: {target}")
            elif not any(target == o or target.startswith(o + ".") for o in OPTIONAL):
                wrong.append(f"{name}: {target}")
    assert not wrong, "imports inside functions that are not optional dependencies: " + ", ".join(sorted(set(wrong)))


def test_files_stay_small():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules().items()}
    big = {n: s for n, s in sizes.items() if s > MAX_LINES}
    assert not big, f"files over {MAX_LINES} lines: {big}"
    assert sizes["medseg.training.trainer"] < MAX_LINES_LOOP


def test_package_faces_only_reexport():
    """`__init__.py` files hold imports, __all__, a docstring and at most the version: no logic.
    The package's own face may also re-export lazily (`TYPE_CHECKING` imports and a module
    `__getattr__`), so that `medseg --help` does not load torch."""
    for path in SRC.rglob("__init__.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if path.parent == SRC and (isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
                                       or isinstance(node, ast.FunctionDef) and node.name == "__getattr__"):
                continue
            allowed = (ast.Import, ast.ImportFrom, ast.Expr, ast.Assign)
            assert isinstance(node, allowed), f"{path}: line {node.lineno} is more than a re-export"
            if isinstance(node, ast.Assign):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                assert names <= {"__all__", "__version__"}, f"{path}: line {node.lineno} assigns {names}"
