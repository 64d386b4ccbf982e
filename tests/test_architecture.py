"""The shape of the code, checked: no import cycle, one home for the MLflow vocabulary, functions that fit
on a screen, and the import boundaries the design promises (each checked in a fresh interpreter)."""

from __future__ import annotations

import ast
import graphlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "mmder")
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))


def _modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that ``name`` imports anywhere in its file (module level or inside functions)."""

    def ours(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        for target in targets:
            module = ours(target)
            # importing one's own package, or a package importing its children, is no cycle
            if module and module != name and not name.startswith(module + "."):
                if not (path.name == "__init__.py" and module.startswith(name + ".")):
                    found.add(module)
    return found


def test_no_import_cycle_among_our_modules():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


def _strings(tree: ast.AST) -> list[ast.Constant]:
    """Every string literal that is not a docstring."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


def test_every_mlflow_tag_of_ours_is_spelled_only_in_the_tag_module():
    tags = ROOT / "harness" / "tracking" / "tags.py"
    spelled = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        if path == tags:
            continue
        for node in _strings(ast.parse(path.read_text())):
            for name in re.findall(r"\bmmder\.([A-Za-z_]\w*)", node.value):
                if not ((ROOT / "mmder" / name).is_dir() or (ROOT / "mmder" / f"{name}.py").exists()):
                    spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}: mmder.{name}")
    assert not spelled, "use harness.tracking.tags:\n" + "\n".join(spelled)


# The harness's packages from the top down: a package imports only packages below it. The command
# line drives benches and sweeps; a sweep drives searches and reads results; results read what workers
# wrote; workers run planned cells; a plan reads experiments and the store. Written once, here.
LAYERS = ("cli", "bench", "driver", "search", "results", "worker", "plan", "tracking", "experiment")


def test_every_package_imports_only_packages_below_it():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        parts = name.split(".")
        if parts[0] != "harness" or len(parts) < 3:
            continue
        mine = LAYERS.index(parts[1])
        for other in _imports(name, path, modules):
            theirs = other.split(".")
            if theirs[0] == "harness" and len(theirs) > 1 and theirs[1] in LAYERS:
                if LAYERS.index(theirs[1]) < mine:
                    upward.append(f"{name} imports {other} (a {theirs[1]} module, above {parts[1]})")
    assert set(LAYERS) == {p.name for p in (ROOT / "harness").iterdir() if (p / "__init__.py").exists()}
    assert not upward, "\n".join(upward)


def test_no_function_is_longer_than_a_screen():
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for pkg in PACKAGES
        for path in sorted((ROOT / pkg).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, "\n".join(long)


def test_no_module_is_longer_than_600_lines():
    long = [
        f"{path.relative_to(ROOT)} ({n} lines)"
        for pkg in PACKAGES
        for path in sorted((ROOT / pkg).rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > 600
    ]
    assert not long, "\n".join(long)


def test_every_module_says_its_job():
    silent = [
        str(p.relative_to(ROOT))
        for p in _modules().values()
        if not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert not silent, silent


def _loaded_after(code: str) -> set[str]:
    """Which heavy top-level packages a fresh interpreter holds after running ``code``."""
    probe = (
        "import sys, json, io, contextlib\n"
        f"{code}\n"
        "heavy = ('torch', 'ray', 'mlflow', 'optuna', 'deepspeed')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _import_all(prefix: str) -> str:
    names = [n for n in _modules() if n == prefix or n.startswith(prefix + ".")]
    return "import importlib\n" + "".join(f"importlib.import_module({n!r})\n" for n in sorted(names))


def test_the_science_never_imports_ray_mlflow_or_optuna():
    loaded = _loaded_after(_import_all("mmder"))
    assert "torch" in loaded, "the probe imported every mmder module"
    assert not loaded & {"ray", "mlflow", "optuna"}, loaded


@pytest.mark.parametrize("package", ["harness.experiment", "harness.plan", "harness.tracking.tags"])
def test_the_experiment_and_its_plan_never_import_torch_ray_or_mlflow(package):
    assert not _loaded_after(_import_all(package)), package


def test_validating_and_planning_every_shipped_experiment_imports_no_torch(tmp_path):
    code = (
        "from harness.cli.main import main\n"
        "from harness.experiment.loading import load_experiment\n"
        "from harness.plan.sweep_plan import plan_sweep\n"
        f"for path in {[str(p) for p in EXPERIMENTS]!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main(['validate', path, '--output', " + repr(str(tmp_path)) + "]) == 0, path\n"
        "        plan_sweep(load_experiment(path), " + repr(str(tmp_path)) + ")\n"
    )
    assert "paper.yaml" in " ".join(p.name for p in EXPERIMENTS)
    assert not _loaded_after(code)
