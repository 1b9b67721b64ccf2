"""The package's layers and its import rule (docs/ARCHITECTURE.md), read from the code's own imports:

    model files <- cli, metrics <- data <- training <- reports <- interop <- tasks <- scripts and command shims

A module imports only from lower layers or from its own layer; no import cycle; a task imports another task's public
names only; the run_*.py scripts import only `supmae.cli` and `supmae.tasks`."""

import ast
import os
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "supmae"
MODEL_FILES = ("configuration_supmae", "modeling_supmae", "image_processing_supmae")
COMMAND_SHIMS = ("convert", "timm_export", "prepare_dataset", "visualization")  # kept at their documented paths
LAYERS = {"models": 0, "cli": 1, "metrics": 1, "data": 2, "training": 3, "reports": 4, "interop": 5, "tasks": 6}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> tuple[str, int]:
    """The layer of a `supmae...` module: its subpackage, or `models` for the three model files."""
    parts = module.split(".")
    if len(parts) == 1:
        return "package", 7
    top = parts[1]
    if top in MODEL_FILES:
        return "models", 0
    if top in COMMAND_SHIMS:
        return "shim", 7
    return top, LAYERS[top]


def is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or path.is_dir()


def imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """Every supmae module `path` imports (module level or inside functions): (module, names, line)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "supmae":
                continue
            names = [alias.name for alias in node.names]
            submodules = [name for name in names if is_module(f"{target}.{name}")]  # `from ..tasks import pretraining`
            found += [(f"{target}.{name}", [], node.lineno) for name in submodules]
            if len(submodules) < len(names):
                found.append((target, [name for name in names if name not in submodules], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name.split(".")[0] == "supmae"]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(ROOT)))
def test_each_module_imports_only_from_lower_layers_or_its_own(path):
    module = module_name(path)
    layer, rank = layer_of(module)
    for target, names, line in imports_of(path):
        target_layer, target_rank = layer_of(target)
        where = f"{path.relative_to(ROOT)}:{line} imports {target}"
        if layer == "models":
            assert target_layer == "models", f"{where}: the model files import only each other (Hub remote code)"
        elif layer == "package":
            assert target_layer == "models", f"{where}: `import supmae` loads the model files only"
        else:
            assert target_rank < rank or target_layer == layer, f"{where}: {layer} may not import {target_layer}"
        if layer == target_layer == "tasks" and target != module:
            private = [name for name in names if name.startswith("_")]
            assert not private, f"{where}: a task uses another task's public names only, not {private}"


def test_there_is_no_import_cycle():
    graph = {module_name(path): {target for target, _, _ in imports_of(path)} for path in MODULES}
    graph = {module: {t for t in targets if t in graph and t != module} for module, targets in graph.items()}
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycle = stack[stack.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("script", sorted(ROOT.glob("run_*.py")), ids=lambda path: path.name)
def test_scripts_are_thin_and_import_only_the_command_line_and_their_task(script):
    targets = {target for target, _, _ in imports_of(script)}
    assert targets and all(t == "supmae.cli" or t.startswith("supmae.tasks.") for t in targets), targets
    assert len(script.read_text().splitlines()) <= 60, f"{script.name} should only wire its task"


def test_the_rule_is_checked_on_every_module_of_the_package():
    """The walk sees every subpackage (a new folder must be given a layer)."""
    folders = {path.parent.name for path in MODULES if path.parent != PACKAGE}
    assert folders == set(LAYERS) - {"models", "cli", "metrics"}, folders
    assert {name for name in MODEL_FILES} <= {path.stem for path in MODULES}
    assert all(os.path.getsize(path) for path in MODULES if path.name != "__init__.py")
