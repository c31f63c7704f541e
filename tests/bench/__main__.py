"""`make bench`: run every tests/bench/bench_*.py, print one table, write .run/bench/results.json.

python -m tests.bench [name-substring ...]
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path

import django

from tests.bench.harness import print_table, write_results


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentops.settings")
    django.setup()
    modules = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    if argv:
        modules = [m for m in modules if any(a in m for a in argv)]
    results, failures = [], []
    for name in modules:
        print(f"bench: {name} ...", flush=True)
        try:
            module = importlib.import_module(f"tests.bench.{name}")
            results.extend(module.run())
        except Exception:
            failures.append(name)
            traceback.print_exc()
    print()
    print_table(results)
    path = write_results(results)
    print(f"\n{sum(r.passed for r in results)} of {len(results)} goals met; results in {path}")
    if failures:
        print(f"benchmarks that crashed: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
