"""The domain package's shape: each subpackage imports on its own (whichever comes first, so the
re-exports in the ``__init__`` files cannot form an import cycle), declares its public names,
and nothing under ``orchestration/`` imports Celery."""

from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

PACKAGES = [
    "orchestration.extraction",
    "orchestration.generation",
    "orchestration.breaker",
    "orchestration.state",
    "orchestration.providers",
]
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_first_in_a_fresh_interpreter(package: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {package}"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("package", PACKAGES)
def test_public_names_are_declared_and_exist(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert not name.startswith("_") and hasattr(module, name), name


def test_the_domain_never_imports_celery() -> None:
    for path in (ROOT / "orchestration").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "celery" or n.startswith("celery.") for n in names), path
