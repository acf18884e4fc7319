"""Every third-party module the code imports is a dependency declared in ``pyproject.toml``.

A package that arrives only as another's dependency (aiohttp came only through Faust) breaks
the day that one drops it. The project's packages import from ``dependencies``; the tests may
also import from the ``dev`` extra; a module loaded with ``importlib.import_module`` on
purpose (an optional feature, with a message when it is missing) belongs to an extra.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("streams", "schemas", "models", "connectors", "deploy", "load-tests")
# Declared but never imported: each is used through another package, for the reason given.
USED_INDIRECTLY = {
    "rocksdict": "Faust's rocksdb:// table store (FORESIGHT_WORKER_STORE)",
    "httptools": "uvicorn's HTTP parser (connectors/http/app.py asks for it by name)",
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(requirements: list[str]) -> set[str]:
    return {_canonical(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CORE = _names(PROJECT["dependencies"])
EXTRAS = {extra: _names(reqs) for extra, reqs in PROJECT["optional-dependencies"].items()}
PROVIDERS = importlib.metadata.packages_distributions()
LOCAL = (
    {p for p in PACKAGES if p.isidentifier()}
    | {"tests"}
    | {f.stem for f in (ROOT / "load-tests").glob("*.py")}
)


def _imports(folder: str) -> Iterator[tuple[str, str, bool]]:
    """``(top-level module, file, optional)`` of every third-party import under ``folder``;
    optional when loaded by ``importlib.import_module("name")``."""
    for path in sorted((ROOT / folder).rglob("*.py")):
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(), where)):
            if isinstance(node, ast.Import):
                modules = [(alias.name, False) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [(node.module, False)]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                modules = [(node.args[0].value, True)]
            else:
                continue
            for module, optional in modules:
                top = module.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in LOCAL:
                    yield top, where, optional


def _distributions(module: str) -> set[str]:
    """The installed distributions that provide ``module`` (its own name when none is)."""
    found = PROVIDERS.get(module, [module])
    return {_canonical(name) for name in found}


def _undeclared(folders: tuple[str, ...], allowed: set[str]) -> list[str]:
    optional_allowed = set().union(*EXTRAS.values()) - EXTRAS["dev"]
    return sorted(
        {
            f"{where}: {module} (from {', '.join(sorted(_distributions(module)))})"
            for folder in folders
            for module, where, optional in _imports(folder)
            if not _distributions(module) & (allowed | (optional_allowed if optional else set()))
        }
    )


def test_the_walk_sees_the_imports() -> None:
    seen = {module for folder in PACKAGES for module, _, _ in _imports(folder)}
    assert {"aiokafka", "numpy", "faust", "yaml", "optuna", "fsspec"} <= seen


def test_the_projects_packages_import_only_declared_dependencies() -> None:
    undeclared = _undeclared(PACKAGES, CORE)
    assert undeclared == [], "add to [project] dependencies in pyproject.toml:\n" + "\n".join(
        undeclared
    )


def test_the_tests_import_only_declared_or_dev_dependencies() -> None:
    undeclared = _undeclared(("tests",), CORE | EXTRAS["dev"])
    assert undeclared == [], "add to the dev extra in pyproject.toml:\n" + "\n".join(undeclared)


def test_every_dependency_is_imported_or_says_why_not() -> None:
    imported = {
        dist
        for folder in PACKAGES
        for module, _, optional in _imports(folder)
        if not optional
        for dist in _distributions(module)
    }
    unused = CORE - imported - set(USED_INDIRECTLY)
    assert unused == set(), f"declared in pyproject.toml but imported nowhere: {sorted(unused)}"
