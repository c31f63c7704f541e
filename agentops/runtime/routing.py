"""Model routing: which models answer an operation, in which order.

A ``Route`` names the model targets for one operation (primary first, then backups) and whether the rule
engine and the human handoff follow them. The seed routes by task complexity: ``planning`` → the large
model, ``classify`` → the small one, each with the other as its backup. Operations without a route use the
router's default chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """One model on one provider (the provider is a key of the guard's provider mapping)."""

    provider: str
    model: str

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True)
class SemanticSettings:
    """A route's opt-in semantic cache (``semantic_cache.py``): answer a request whose last user message means
    the same as a cached one's (cosine ≥ ``threshold``) for ``ttl`` seconds; ``embeddings_model`` blank = the
    offline embedder. ``route``: the route's name, the metrics' label."""

    route: str
    threshold: float = 0.92
    ttl: float = 3600.0
    embeddings_model: str = ""


@dataclass(frozen=True)
class Route:
    """The fallback chain of one operation: ``chain`` (models) → rules → human."""

    operation: str
    chain: tuple[Target, ...]
    use_rules: bool = True
    use_human: bool = True
    semantic: SemanticSettings | None = None  # the route's semantic cache, when turned on

    def __post_init__(self) -> None:
        object.__setattr__(self, "chain", tuple(self.chain))


def handler_name(index: int) -> str:
    """Metric/log label of the ``index``-th model handler: primary, backup, backup_2, ..."""
    if index == 0:
        return "primary"
    return "backup" if index == 1 else f"backup_{index}"


class Router:
    """Resolves ``(operation, model)`` to a ``Route``; results are memoised (routers are rebuilt on change)."""

    def __init__(
        self,
        routes: Iterable[Route],
        default_chain: Sequence[Target],
        *,
        use_rules: bool = True,
        use_human: bool = True,
        catalog: Mapping[str, str] | None = None,
    ) -> None:
        self.routes = {route.operation: route for route in routes}
        self.catalog = dict(catalog or {})
        self.default_chain = tuple(default_chain)
        self.use_rules = use_rules
        self.use_human = use_human
        self._memo: dict[tuple[str, str], Route] = {}

    def route_for(self, operation: str, model: str | None = None) -> Route:
        """The route for ``operation``. An explicit ``model`` goes first, the route's other targets follow."""
        key = (operation, model or "")
        route = self._memo.get(key)
        if route is None:
            route = self._resolve(operation, model or "")
            self._memo[key] = route
        return route

    def provider_for(self, model: str) -> str | None:
        """The provider that serves ``model`` first: a route's primary before any route's backup, then the
        default chain, then a provider's served models. Ranking by position rather than by route means a
        model one route uses as its primary is not sent to another route's backup provider (the order of
        routes in the table is not something an operator sets)."""
        chains = [route.chain for route in self.routes.values()]
        for position in range(max((len(chain) for chain in chains), default=0)):
            for chain in chains:
                if position < len(chain) and chain[position].model == model:
                    return chain[position].provider
        for target in self.default_chain:
            if target.model == model:
                return target.provider
        return self.catalog.get(model)

    def models(self) -> list[str]:
        """Every model the routing table names or a provider lists, in a stable order."""
        names = [t.model for route in self.routes.values() for t in route.chain]
        names += [t.model for t in self.default_chain] + list(self.catalog)
        return list(dict.fromkeys(names))

    def _resolve(self, operation: str, model: str) -> Route:
        base = self.routes.get(operation)
        if base is None:
            base = Route(operation, self.default_chain, self.use_rules, self.use_human)
        if not model:
            return base
        provider = self.provider_for(model)
        if provider is None:
            provider = (base.chain or self.default_chain or (Target("default", model),))[0].provider
        first = Target(provider, model)
        rest = tuple(t for t in base.chain if t != first)
        return Route(operation, (first, *rest), base.use_rules, base.use_human, base.semantic)
