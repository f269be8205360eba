"""Every third-party module the code imports comes from a distribution pyproject.toml declares.

A machine that already has a package installed hides a missing declaration until a fresh machine (or CI on
one) fails: Strawberry once went undeclared this way. Runtime code may use only `dependencies`; tests,
benchmarks and the embedded demo stack (which the README installs with the `dev` extra) may also use `dev`.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"cellcommons", "cellcommons_connectors", "tests", "bench"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], set[str]]:
    runtime, dev = set(), set()
    for requirement in requires("cellcommons") or []:
        name = _normalise(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])
        (dev if 'extra == "dev"' in requirement else runtime).add(name)
    return runtime, dev


DEMO = ROOT / "platform" / "cellcommons" / "demo"


def _sources(*folders: str, demo: bool) -> list[Path]:
    paths = [path for folder in folders for path in (ROOT / folder).rglob("*.py") if not path.is_relative_to(DEMO)]
    return [*paths, *DEMO.rglob("*.py")] if demo else paths


def _imported(paths: list[Path]) -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                modules.setdefault(name.split(".")[0], path)
    return {
        module: path
        for module, path in modules.items()
        if module not in FIRST_PARTY and module not in sys.stdlib_module_names
    }


def _undeclared(modules: dict[str, Path], allowed: set[str]) -> list[str]:
    providers = packages_distributions()
    problems = []
    for module, path in sorted(modules.items()):
        distributions = {_normalise(name) for name in providers.get(module, [])}
        if not distributions & allowed:
            problems.append(f"{module} (imported in {path.relative_to(ROOT)}; provided by {sorted(distributions)})")
    return problems


@pytest.mark.parametrize(
    ("folders", "with_dev"),
    [(("platform", "connectors"), False), (("tests", "bench"), True)],
    ids=["runtime", "tests-and-benchmarks"],
)
def test_every_import_is_declared(folders: tuple[str, ...], with_dev: bool) -> None:
    runtime, dev = _declared()
    allowed = runtime | dev if with_dev else runtime
    assert _undeclared(_imported(_sources(*folders, demo=with_dev)), allowed) == []
