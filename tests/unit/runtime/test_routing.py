"""Model routing per operation and the seed's routes."""

from __future__ import annotations

from agentops.runtime.config import DEFAULT_CONFIG, LARGE_MODEL, SMALL_MODEL, CachedConfigSource, seed_routes
from agentops.runtime.routing import Route, Router, Target, handler_name
from tests.fixtures.runtime import FakeClock


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
    assert router.route_for("planning", "unknown").chain == (
        Target("a", "unknown"),
        Target("a", "big"),
        Target("b", "small"),
    )
    assert router.route_for("other").use_rules is False
    assert router.route_for("planning", "small") is route  # memoised
    assert router.provider_for("big") == "a" and router.provider_for("nope") is None


def test_a_model_goes_to_the_provider_that_has_it_as_a_primary_before_any_backup():
    """The demo's shape: classify is mock gpt-4o-mini → simulated gpt-4o, planning mock gpt-4o → simulated
    gpt-4o-mini. Whatever order the routes come in, gpt-4o is the mock's (planning's primary)."""
    classify = Route("classify", [Target("mock", "gpt-4o-mini"), Target("simulated", "gpt-4o")])
    planning = Route("planning", [Target("mock", "gpt-4o"), Target("simulated", "gpt-4o-mini")])
    for routes in ([classify, planning], [planning, classify]):
        router = Router(routes, [Target("simulated", "gpt-4o")], use_rules=False)
        assert router.provider_for("gpt-4o") == "mock" and router.provider_for("gpt-4o-mini") == "mock"
        assert router.route_for("chat", "gpt-4o").chain[0] == Target("mock", "gpt-4o")
    only_backup = Router([classify], [], use_rules=False)
    assert only_backup.provider_for("gpt-4o") == "simulated"


def test_handler_names():
    assert [handler_name(i) for i in range(4)] == ["primary", "backup", "backup_2", "backup_3"]
    assert Target("p", "m").name == "p:m"


def test_config_builds_derived_objects_once_and_rebuilds_on_replace():
    cfg = DEFAULT_CONFIG.replace(version="2")
    assert cfg.router is cfg.router and cfg.rule_engine is cfg.rule_engine
    assert cfg.router is not DEFAULT_CONFIG.router


def test_cached_config_source_reloads_on_ttl_and_on_a_version_change():
    clock = FakeClock()
    loads: list[int] = []
    version = {"v": 1}

    def load():
        loads.append(version["v"])
        return DEFAULT_CONFIG.replace(version=str(version["v"]))

    source = CachedConfigSource(load, ttl=30, version=lambda: version["v"], check_interval=1.0, clock=clock)
    assert source.get().version == "1" and source.get().version == "1" and loads == [1]
    version["v"] = 2  # an admin saves: the probe sees it within check_interval
    clock.now += 0.5
    assert source.get().version == "1"
    clock.now += 0.6
    assert source.get().version == "2" and loads == [1, 2]
    clock.now += 1.1  # probe unchanged: no reload
    assert source.get().version == "2" and loads == [1, 2]
    clock.now += 30  # ttl passed: reload even without a version change
    source.get()
    assert loads == [1, 2, 2]
    source.invalidate()
    source.get()
    assert loads == [1, 2, 2, 2]


def test_cached_config_source_survives_a_failing_loader():
    clock = FakeClock()
    calls = {"n": 0}

    def load():
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("database down")
        return DEFAULT_CONFIG.replace(version="good")

    source = CachedConfigSource(load, ttl=1, clock=clock)
    assert source.get().version == "good"
    clock.now += 5
    assert source.get().version == "good"  # last good config
    broken = CachedConfigSource(lambda: 1 / 0, clock=clock)
    assert broken.get() is DEFAULT_CONFIG
