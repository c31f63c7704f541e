"""The Simplified Chinese catalogs are complete and safe to compile: every entry translated, none fuzzy, and
each translation keeps its English original's placeholders exactly (a lost ``%(name)s`` raises a KeyError when
the string is formatted; an extra one shows as raw text). Run it after merging catalogs (msgcat) too."""

from __future__ import annotations

import re
from collections import Counter

import polib
import pytest

from agentops.devtools import messages

CATALOGS = messages.catalogs()
# Python's named and positional fields, "%%", and str.format / JS interpolate fields ({count}).
PLACEHOLDER = re.compile(r"%\([A-Za-z_][A-Za-z0-9_]*\)[sdifr]|%[sdifr]|%%|\{[A-Za-z_][A-Za-z0-9_]*\}")


def placeholders(text: str) -> Counter:
    return Counter(PLACEHOLDER.findall(text))


def entries(path):
    return [entry for entry in polib.pofile(str(path)) if not entry.obsolete]


def test_both_catalogs_are_there():
    assert {path.name for path in CATALOGS} == {"django.po", "djangojs.po"}


@pytest.mark.parametrize("path", CATALOGS, ids=lambda path: path.name)
def test_every_entry_is_translated_and_checked(path):
    missing = [entry.msgid for entry in messages.untranslated(path)]
    assert missing == [], f"{path.name}: {len(missing)} entries without a checked translation: {missing[:20]}"


@pytest.mark.parametrize("path", CATALOGS, ids=lambda path: path.name)
def test_translations_keep_their_placeholders(path):
    wrong = []
    for entry in entries(path):
        if entry.msgid_plural:
            for form in entry.msgstr_plural.values():
                # nplurals=1: the one Chinese form stands for both English ones, which share their fields
                if placeholders(form) != placeholders(entry.msgid_plural):
                    wrong.append((entry.msgid_plural, form))
        elif placeholders(entry.msgstr) != placeholders(entry.msgid):
            wrong.append((entry.msgid, entry.msgstr))
    assert wrong == []


def test_the_placeholder_check_catches_a_lost_or_renamed_field():
    assert placeholders("%(n)s runs · 10 %%") == Counter({"%(n)s": 1, "%%": 1})
    assert placeholders("共 %(count)s 个运行") != placeholders("%(n)s runs")
    assert placeholders("Alert at (% of the limit)") == Counter()  # a bare percent sign is no field
    assert placeholders("{count} items") == Counter({"{count}": 1})
