"""agentops/runtime is pure Python: no module under it imports Django (DESIGN.md §3)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[3] / "agentops" / "runtime"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from a import b`: a.b
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def test_no_runtime_module_imports_django():
    files = sorted(RUNTIME.rglob("*.py"))
    assert len(files) >= 10
    offenders = {
        str(path.relative_to(RUNTIME)): sorted(n for n in imported_modules(path) if n.split(".")[0] == "django")
        for path in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_runtime_module_imports_the_django_side_of_agentops():
    # metrics and the GenAI span helpers are pure Python (prometheus_client, opentelemetry).
    allowed = ("agentops.runtime", "agentops.observability.metrics", "agentops.observability.genai")
    for path in RUNTIME.rglob("*.py"):
        for name in imported_modules(path):
            if name.startswith("agentops"):
                assert name.startswith(allowed), f"{path.name} imports {name}"


def test_importing_the_runtime_does_not_load_django():
    code = (
        "import sys, agentops.runtime, agentops.runtime.guard, agentops.runtime.breaker, agentops.runtime.cache;"
        "sys.exit(1 if any(m == 'django' or m.startswith('django.') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=RUNTIME.parents[1]).returncode == 0
