"""Model routing per operation and the seed's routes."""

from __future__ import annotations

from agentops.runtime.config import DEFAULT_CONFIG, LARGE_MODEL, SMALL_MODEL, seed_routes
from agentops.runtime.routing import Route, Router, Target, handler_name


def test_seed_routes_choose_by_complexity():
    router = DEFAULT_CONFIG.router
    planning = router.route_for("planning")
    classify = router.route_for("classify")
    assert [t.model for t in planning.chain] == [LARGE_MODEL, SMALL_MODEL]
    assert [t.model for t in classify.chain] == [SMALL_MODEL, LARGE_MODEL]
    assert planning.use_rules and planning.use_human
    other = router.route_for("summarize")
    assert other.operation == "summarize" and other.chain == DEFAULT_CONFIG.default_chain


def test_backup_provider():
    routes, default = seed_routes("openai", large="L", small="S", backup_provider="azure")
    assert routes[0].chain == (Target("openai", "L"), Target("azure", "S"))
    assert default == (Target("openai", "S"), Target("azure", "L"))


def test_an_explicit_model_goes_first_and_keeps_the_backups():
    router = Router(
        [Route("planning", [Target("a", "big"), Target("b", "small")])],
        [Target("a", "small")],
        use_rules=False,
    )
    route = router.route_for("planning", "small")
    assert route.chain == (Target("b", "small"), Target("a", "big"))
    assert router.route_for("planning", "unknown").chain == (Target("a", "unknown"), Target("a", "big"), Target("b", "small"))
    assert router.route_for("other").use_rules is False
    assert router.route_for("planning", "small") is route  # memoised
    assert router.provider_for("big") == "a" and router.provider_for("nope") is None


def test_handler_names():
    assert [handler_name(i) for i in range(4)] == ["primary", "backup", "backup_2", "backup_3"]
    assert Target("p", "m").name == "p:m"


def test_config_builds_derived_objects_once_and_rebuilds_on_replace():
    cfg = DEFAULT_CONFIG.replace(version="2")
    assert cfg.router is cfg.router and cfg.rule_engine is cfg.rule_engine
    assert cfg.router is not DEFAULT_CONFIG.router
