"""The house's import contracts ([tool.importlinter] in pyproject.toml) hold on the code as it is, and they
would fail on a circle or a door opened the wrong way: both shown here on a copy of the source."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _copy_of_the_source(into: Path) -> Path:
    for package in ("agentops", "review", "budgets"):
        shutil.copytree(
            ROOT / package, into / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "grafana")
        )
    shutil.copy(ROOT / "pyproject.toml", into / "pyproject.toml")
    return into


def _lint_imports(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return _copy_of_the_source(tmp_path)


def test_the_source_keeps_every_contract(source):
    result = _lint_imports(source)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_circle_between_rooms_breaks_the_contracts(source):
    # lib is the floor every room stands on; an import from lib back up into runs makes a circle
    # (runs -> lib -> runs) and opens a door the wrong way.
    queue = source / "agentops" / "lib" / "queue.py"
    queue.write_text(queue.read_text() + "\nfrom agentops.runs import models as _runs_models  # a door the wrong way\n")
    result = _lint_imports(source)
    assert result.returncode == 1
    out = result.stdout
    assert "No import circles" in out and "BROKEN" in out
    assert "agentops.lib.queue -> agentops.runs.models" in out
    assert "lib is domain-free: it imports no room BROKEN" in " ".join(out.split())


def test_the_runtime_may_not_import_django(source):
    guard = source / "agentops" / "runtime" / "guard.py"
    guard.write_text(guard.read_text() + "\nimport django.db  # the runtime must stay pure Python\n")
    result = _lint_imports(source)
    assert result.returncode == 1
    assert "agentops.runtime.guard -> django (" in result.stdout
