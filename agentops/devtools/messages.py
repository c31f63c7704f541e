"""Translation catalogs: ``compile_all`` turns every ``locale/*/LC_MESSAGES/*.po`` into the ``.mo`` Django reads
(with polib, pure Python: no GNU gettext needed to run or test); ``python -m agentops.devtools.messages make``
(`make messages`) extracts the strings of the code and templates into the catalogs first (that needs GNU
gettext's xgettext, a developer's tool) and says how many entries still lack a translation.

The ``.mo`` files are build output, not committed: the launcher compiles them before `make run`, `make test`
and `make bench`, and again whenever a ``.po`` is newer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polib

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ("zh_Hans",)
# Where makemessages must not look: build output, other people's code, the test suite.
IGNORED = (".venv/*", ".run/*", "tests/*", "node_modules/*", "static/vendor/*")


def catalogs() -> list[Path]:
    return sorted(path for path in ROOT.glob("locale/*/LC_MESSAGES/*.po"))


def compile_all(*, force: bool = False) -> list[Path]:
    """Compile each catalog whose ``.mo`` is missing or older than its ``.po``; answers the ones compiled."""
    compiled = []
    for po_path in catalogs():
        mo_path = po_path.with_suffix(".mo")
        if force or not mo_path.exists() or mo_path.stat().st_mtime < po_path.stat().st_mtime:
            polib.pofile(str(po_path)).save_as_mofile(str(mo_path))
            compiled.append(po_path)
    return compiled


def untranslated(po_path: Path) -> list[polib.POEntry]:
    """The entries of a catalog a reader would see in English: untranslated, or fuzzy (a guess nobody checked)."""
    catalog = polib.pofile(str(po_path))
    return [entry for entry in catalog if not entry.obsolete and (not entry.translated() or entry.fuzzy)]


def make() -> int:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "agentops.settings"}
    env.setdefault("SECRET_KEY", "makemessages-only-" + "x" * 40)
    for domain in ("django", "djangojs"):
        command = [sys.executable, "manage.py", "makemessages", "--no-obsolete", "-d", domain]
        command += [f"--locale={language}" for language in LANGUAGES]
        command += [argument for pattern in IGNORED for argument in ("--ignore", pattern)]
        if subprocess.run(command, cwd=ROOT, env=env).returncode != 0:
            return 1
    compile_all(force=True)
    missing = {path: untranslated(path) for path in catalogs()}
    for path, entries in missing.items():
        print(f"{path.relative_to(ROOT)}: {len(entries)} entries without a checked translation")
    return 0


if __name__ == "__main__":
    sys.exit(make() if sys.argv[1:] == ["make"] else (print(__doc__) or 2))
