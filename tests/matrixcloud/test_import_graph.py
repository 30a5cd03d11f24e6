"""The house plan, checked: which package may import which.

- ``matrixcloud/`` is two halves (its ``__init__`` says which file is in which). The floor
  imports no domain app and nothing of the roof; no domain app imports the roof.
- Domain apps import each other without a cycle, and ``jobs`` imports no domain app but
  ``accounts`` (every app uses it for workspaces and audit).

Every import counts: at the top, inside a function, under ``TYPE_CHECKING``, and
``import_module("…")`` with a literal name.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import REPO_ROOT

ROOT = REPO_ROOT
DOMAIN = ("accounts", "runtimes", "jobs", "models_registry", "sandbox")
ROOF = (
    "matrixcloud.urls",
    "matrixcloud.asgi",
    "matrixcloud.wsgi",
    "matrixcloud.cli",
    "matrixcloud.management",
    "matrixcloud.console",
    "matrixcloud.importer",
    "matrixcloud.platform",
)
# What each domain app may import of the others, where the house plan narrows it.
ALLOWED_DOMAIN = {"jobs": {"accounts"}}


@dataclass(frozen=True)
class Edge:
    source: str  # the importing module
    target: str  # the imported module (or module.name)

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(root: Path, path: Path) -> set[str]:
    """Every module ``path`` imports, wherever in the file the import stands."""
    name = module_name(root, path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def import_edges(root: Path) -> list[Edge]:
    edges = []
    for top in (*DOMAIN, "matrixcloud"):
        for path in sorted((root / top).rglob("*.py")):
            source = module_name(root, path)
            edges.extend(Edge(source, target) for target in sorted(imports_of(root, path)))
    return edges


def app_of(module: str) -> str | None:
    top = module.split(".")[0]
    return top if top in (*DOMAIN, "matrixcloud") else None


def is_roof(module: str) -> bool:
    return any(module == roof or module.startswith(roof + ".") for roof in ROOF)


def layer_faults(edges: list[Edge]) -> list[str]:
    """Floor modules that import a domain app or the roof; domain modules that import
    the roof; domain imports the house plan rules out."""
    faults = []
    for edge in edges:
        source_app, target_app = app_of(edge.source), app_of(edge.target)
        if target_app is None or (source_app == target_app and source_app != "matrixcloud"):
            continue
        if source_app == "matrixcloud" and not is_roof(edge.source):
            if target_app in DOMAIN:
                faults.append(f"floor imports a domain app: {edge}")
            elif is_roof(edge.target):
                faults.append(f"floor imports the roof: {edge}")
        elif source_app in DOMAIN and is_roof(edge.target):
            faults.append(f"domain app imports the roof: {edge}")
        elif target_app in DOMAIN and target_app not in ALLOWED_DOMAIN.get(source_app, DOMAIN):
            faults.append(f"{source_app} may import only {ALLOWED_DOMAIN[source_app]}: {edge}")
    return faults


def app_cycles(edges: list[Edge]) -> list[list[str]]:
    """Cycles between domain apps (Tarjan's strongly connected components of size > 1),
    each with one import of every hop as the example."""
    graph: dict[str, dict[str, Edge]] = defaultdict(dict)
    for edge in edges:
        a, b = app_of(edge.source), app_of(edge.target)
        if a in DOMAIN and b in DOMAIN and a != b:
            graph[a].setdefault(b, edge)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for app in DOMAIN:
        if app not in index:
            visit(app)
    return [
        [str(graph[a][b]) for a in component for b in component if b in graph[a]]
        for component in components
    ]


def test_the_floor_imports_no_app_and_no_app_imports_the_roof():
    faults = layer_faults(import_edges(ROOT))
    assert faults == [], "\n".join(faults)


def test_domain_apps_import_each_other_without_a_cycle():
    cycles = app_cycles(import_edges(ROOT))
    assert cycles == [], "\n".join("; ".join(cycle) for cycle in cycles)


def test_the_package_docstring_names_every_part_of_the_roof():
    import matrixcloud

    doc = matrixcloud.__doc__ or ""
    missing = [roof for roof in ROOF if roof.removeprefix("matrixcloud.") not in doc]
    assert missing == [], f"matrixcloud/__init__.py does not say these are roof: {missing}"


# --- the checker itself finds what it is there to find ------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for top in (*DOMAIN, "matrixcloud"):
        (root / top).mkdir(exist_ok=True)
    return root


def test_the_checker_finds_a_cycle_a_lazy_floor_import_and_a_roof_import(tmp_path):
    root = _tree(
        tmp_path,
        {
            "runtimes/selectors.py": "from sandbox.models import SandboxSession\n",
            "sandbox/models.py": "def f():\n    from runtimes import selectors\n",
            "matrixcloud/lib/x.py": "def g():\n    from accounts.models import User\n",
            "matrixcloud/api/y.py": "from matrixcloud.console.views import auth\n",
            "accounts/z.py": "import importlib\nimportlib.import_module('matrixcloud.platform')\n",
            "jobs/w.py": "from models_registry import choices\n",
            "matrixcloud/console/views.py": "from sandbox import models\n",
        },
    )
    edges = import_edges(root)
    assert app_cycles(edges) == [
        [
            "runtimes.selectors -> sandbox.models",
            "sandbox.models -> runtimes",
        ]
    ]
    faults = layer_faults(edges)
    assert any("floor imports a domain app: matrixcloud.lib.x -> accounts" in f for f in faults)
    assert any(
        "floor imports the roof: matrixcloud.api.y -> matrixcloud.console" in f for f in faults
    )
    assert any(
        "domain app imports the roof: accounts.z -> matrixcloud.platform" in f for f in faults
    )
    assert any("jobs may import only" in f for f in faults)
    assert not any("matrixcloud.console.views ->" in f for f in faults), "the roof composes apps"


@pytest.mark.parametrize(
    ("source", "line", "expected"),
    [
        ("sandbox/api/views.py", "from ..models import X\n", "sandbox.models"),
        ("sandbox/api/__init__.py", "from .views import X\n", "sandbox.api.views"),
        ("sandbox/api/views.py", "from . import fastcall\n", "sandbox.api.fastcall"),
    ],
)
def test_relative_imports_resolve_to_their_module(tmp_path, source, line, expected):
    root = _tree(tmp_path, {source: line})
    assert expected in imports_of(root, root / source)


# --- dependencies say what is used ---------------------------------------------------------


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_norm(Requirement(spec).name) for spec in project["dependencies"]}


def _app_sources() -> list[Path]:
    return [path for top in (*DOMAIN, "matrixcloud") for path in sorted((ROOT / top).rglob("*.py"))]


def test_what_the_service_imports_is_declared_and_what_is_declared_is_used():
    import sys
    from importlib.metadata import packages_distributions

    distributions = packages_distributions()
    ours = {*DOMAIN, "matrixcloud"}
    imported: dict[str, str] = {}
    for path in _app_sources():
        for module in imports_of(ROOT, path):
            top = module.split(".")[0]
            if top and top not in ours and top not in sys.stdlib_module_names:
                imported.setdefault(top, str(path.relative_to(ROOT)))
    declared = _declared()
    undeclared = {
        top: where
        for top, where in imported.items()
        if top in distributions and not {_norm(d) for d in distributions[top]} & declared
    }
    assert undeclared == {}, f"imported by the service but not a dependency: {undeclared}"
    # A dependency is used when the service imports it, or names it where Django or
    # serve loads it by name (each such name must still stand in the code).
    used_by_import = {_norm(dist) for top in imported for dist in distributions.get(top, ())}
    text = "\n".join(path.read_text() for path in _app_sources())
    named = {name: spec for name, spec in NAMED_DEPENDENCIES.items() if spec in text}
    unused = sorted(declared - used_by_import - set(named))
    assert unused == [], f"dependencies the service never imports or names: {unused}"


# Dependencies loaded by name, with the name that loads them.
NAMED_DEPENDENCIES = {
    "daphne": "daphne",  # serve runs the web process as `python -m daphne`
    "psycopg": "django.db.backends.postgresql",  # the database engine
    "channels-redis": "channels_redis.",  # the channel layer backend
    "whitenoise": "whitenoise.middleware.",  # static files
    "argon2-cffi": "Argon2PasswordHasher",  # the password hasher
}
