"""The rule engine: admin-editable ``pattern → answer`` rules, the last automatic handler of a chain.

Rules are tried in order against the last user message; the first whose regex matches answers. An answer
may use ``{0}`` (the whole match) and ``{1}``, ``{2}``... (groups), and ``{name}`` for named groups. No
match raises ``NoRuleMatched`` and the chain moves on (to the human handoff).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from agentops.runtime.errors import NoRuleMatched
from agentops.runtime.providers.base import LLMRequest, LLMResult


@dataclass(frozen=True)
class Rule:
    """One rule. ``operations`` limits it to those operations (empty: every operation)."""

    pattern: str
    answer: str
    name: str = ""
    operations: tuple[str, ...] = ()
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern, re.IGNORECASE))

    def render(self, match: re.Match[str]) -> str:
        try:
            return self.answer.format(match.group(0), *match.groups(default=""), **match.groupdict(default=""))
        except (IndexError, KeyError, ValueError):
            return self.answer  # an answer with literal braces is used as written


class RuleEngine:
    """A Provider (``name == "rules"``) answering from rules; costs no tokens."""

    def __init__(self, rules: Iterable[Rule] = (), name: str = "rules") -> None:
        self.name = name
        self.rules = tuple(rules)

    def match(self, request: LLMRequest) -> tuple[Rule, str] | None:
        """The first matching rule and its rendered answer, or None."""
        text = request.last_user_text()
        for rule in self.rules:
            if rule.operations and request.operation not in rule.operations:
                continue
            m = rule.regex.search(text)
            if m is not None:
                return rule, rule.render(m)
        return None

    def complete(self, request: LLMRequest, timeout: float = 0.0) -> LLMResult:
        found = self.match(request)
        if found is None:
            raise NoRuleMatched(f"no rule matches operation {request.operation!r}")
        rule, answer = found
        return LLMResult(
            text=answer,
            model=f"rule:{rule.name or rule.pattern}",
            provider=self.name,
            input_tokens=0,
            output_tokens=0,
            finish_reason="rule",
            raw={"rule": rule.name, "pattern": rule.pattern},
        )
