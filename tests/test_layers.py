"""The one-way layering of docs/architecture.md, checked on the source text (ast only: nothing is imported).

    cli  ->  pipeline, hypothesis, request, quickstart, studies
         ->  parts (data, models, compress, train, report, coverage, architecture)  ->  stats

and below everything the foundation (errors, files, streams, config). A module imports only from its own layer or
a lower one, the statistics import no torch and nothing of tokenbounds but themselves, errors and streams, and no
chain of imports comes back to where it started. Imports inside functions count: a lazy import that runs back up is
still a cycle in the design.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tokenbounds"

# Layer of each top-level name under tokenbounds (a module or a sub-package); higher may import lower, never back.
LAYERS = {
    "__init__": 0,
    "errors": 0,
    "files": 0,
    "streams": 0,
    "config": 0,
    "stats": 1,
    "data": 2,
    "models": 2,
    "compress": 2,
    "train": 2,
    "report": 2,
    "coverage": 2,
    "architecture": 2,
    "pipeline": 3,
    "execution": 3,
    "distributed": 3,
    "run_dir": 3,
    "quickstart": 3,
    "quickstart_config": 3,
    "studies": 3,
    "hypothesis": 3,
    "request": 3,
    "cli": 4,
    "__main__": 4,
}
STATS_MAY_IMPORT = {"stats", "errors", "streams"}
TORCH_FREE = {"stats", "coverage", "config", "streams", "errors"}  # pure numpy (or stdlib: config answers --help)
HEAVY = {"torch", "transformers"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Every module `source` imports, anywhere in the file; relative imports resolved against `module`."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from tokenbounds.stats import eb` imports the module tokenbounds.stats.eb
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    known = set(files)
    return {mod: imports_of(path.read_text(), mod, path.name == "__init__.py", known) for mod, path in files.items()}


GRAPH = graph()


def top(module: str) -> str:
    """The top-level name under tokenbounds: 'stats' for tokenbounds.stats.eb, '__init__' for tokenbounds."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def internal(names) -> set[str]:
    return {n for n in names if n == "tokenbounds" or n.startswith("tokenbounds.")}


def test_the_parser_sees_lazy_relative_and_from_package_imports():
    """Break it on purpose: each of these upward imports must be found."""
    src = (
        "import numpy\n"
        "from . import eb\n"
        "from ..pipeline import run\n"
        "from tokenbounds.stats import bound\n"
        "def f():\n    import torch\n    from tokenbounds import cli\n"
    )
    known = {"tokenbounds.stats.eb", "tokenbounds.stats.bound", "tokenbounds.pipeline", "tokenbounds.cli"}
    found = imports_of(src, "tokenbounds.stats.lotfi", False, known)
    assert found == {"numpy", "torch", "tokenbounds.stats.eb", "tokenbounds.pipeline", "tokenbounds.stats.bound",
                     "tokenbounds.cli"}  # fmt: skip
    assert imports_of("from . import units\n", "tokenbounds.data", True, {"tokenbounds.data.units"}) == {
        "tokenbounds.data.units"
    }


def test_every_module_has_a_layer():
    assert len(GRAPH) > 50  # the walk found the package
    unplaced = sorted(mod for mod in GRAPH if top(mod) not in LAYERS)
    assert not unplaced, f"place these in LAYERS (and in docs/architecture.md): {unplaced}"


def test_imports_run_one_way():
    upward = [
        (mod, dep)
        for mod, deps in GRAPH.items()
        for dep in internal(deps)
        if dep in GRAPH and LAYERS[top(dep)] > LAYERS[top(mod)]
    ]
    assert not upward, f"imports that run back up the layers: {upward}"


def test_pipeline_and_parts_never_import_a_study_the_quickstart_or_the_cli():
    above = {"quickstart", "studies", "cli", "__main__"}
    bad = [
        (mod, dep)
        for mod, deps in GRAPH.items()
        if LAYERS[top(mod)] <= 2 or top(mod) == "pipeline"
        for dep in internal(deps)
        if top(dep) in above
    ]
    assert not bad, bad


def test_statistics_are_pure():
    bad = [
        (mod, dep)
        for mod, deps in GRAPH.items()
        if top(mod) == "stats"
        for dep in internal(deps)
        if top(dep) not in STATS_MAY_IMPORT
    ]
    assert not bad, f"stats/ imports only itself, errors and streams: {bad}"


@pytest.mark.parametrize("part", sorted(TORCH_FREE))
def test_torch_free_parts_import_no_torch(part):
    heavy = [
        (mod, dep) for mod, deps in GRAPH.items() if top(mod) == part for dep in deps if dep.split(".")[0] in HEAVY
    ]
    assert not heavy, heavy


def test_no_import_cycles():
    """Tarjan's strongly connected components of the module graph: every one must be a single module."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(internal(GRAPH[v]) & set(GRAPH)):
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
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
