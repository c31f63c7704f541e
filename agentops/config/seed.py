"""Default runtime settings (DESIGN.md §11): retry policies, a simulated provider so everything runs
offline, the seed's model routes and rules, and the settings row. Idempotent; used by a data migration
(with historical models) and by tests that flush the database."""

from collections.abc import Callable

RETRY = [
    # error class, retries, base, max, multiplier
    ("ConnectionError", 5, 0.5, 60.0, 2.0),
    ("RateLimitError", 3, 10.0, 60.0, 2.0),
    ("ServiceUnavailable", 4, 2.0, 60.0, 2.0),
    ("Timeout", 3, 1.0, 60.0, 2.0),
    ("InvalidResponse", 3, 1.0, 60.0, 2.0),
    ("AuthenticationError", 0, 1.0, 60.0, 2.0),
    ("BadRequest", 0, 1.0, 60.0, 2.0),
    # The error taxonomy's other classes (issue 17): resource exhaustion gets a short back-off, logic
    # failures (a rejected answer, a tool's own error) and budget refusals are not asked again.
    ("ResourceExhausted", 2, 0.5, 5.0, 2.0),
    ("RejectedAnswer", 0, 1.0, 60.0, 2.0),
    ("LogicError", 0, 1.0, 60.0, 2.0),
    ("BudgetExceeded", 0, 1.0, 60.0, 2.0),
]
LARGE, SMALL = "gpt-4o", "gpt-4o-mini"


def seed_retry_policies(get_model: Callable[[str, str], type]) -> None:
    """One retry policy per error class (rows an admin already has are left as they are)."""
    RetryPolicy = get_model("agentops", "RetryPolicy")
    for error_class, retries, base, max_delay, multiplier in RETRY:
        RetryPolicy.objects.get_or_create(
            error_class=error_class,
            defaults={"max_retries": retries, "base_delay": base, "max_delay": max_delay, "multiplier": multiplier},
        )


def seed_runtime_defaults(get_model: Callable[[str, str], type]) -> None:
    Provider = get_model("agentops", "Provider")
    ModelRoute = get_model("agentops", "ModelRoute")
    FallbackRule = get_model("agentops", "FallbackRule")
    RuntimeSettings = get_model("agentops", "RuntimeSettings")
    seed_retry_policies(get_model)
    simulated, _ = Provider.objects.get_or_create(name="simulated", defaults={"kind": "simulated", "latency_ms": 20})
    # Migration 0002 runs this with the models of its time, before providers listed their models (0005).
    if hasattr(simulated, "served_models") and not simulated.served_models:
        Provider.objects.filter(pk=simulated.pk).update(served_models=f"{LARGE}, {SMALL}")
    ModelRoute.objects.get_or_create(
        operation="planning",
        defaults={
            "primary_provider": simulated,
            "primary_model": LARGE,
            "backup_provider": simulated,
            "backup_model": SMALL,
        },
    )
    classify, created = ModelRoute.objects.get_or_create(
        operation="classify",
        defaults={
            "primary_provider": simulated,
            "primary_model": SMALL,
            "backup_provider": simulated,
            "backup_model": LARGE,
        },
    )
    # A classification is one word ("negative"), under the seed's 10-character minimum: the route keeps its own
    # answer checks (any length, the default phrases). Older migrations run this before the fields existed (0012).
    if created and any(f.name == "own_answer_checks" for f in ModelRoute._meta.get_fields()):
        ModelRoute.objects.filter(pk=classify.pk).update(own_answer_checks=True, min_answer_chars=1)
    FallbackRule.objects.get_or_create(
        name="password_reset",
        defaults={
            "pattern": r"\b(?:reset|forgot|change)\b.{0,20}\bpassword\b",
            "position": 10,
            "answer": "To reset your password use 'Forgot password' on the sign-in page; the link is valid for 1 hour.",
        },
    )
    FallbackRule.objects.get_or_create(
        name="greeting",
        defaults={
            "pattern": r"^\s*(?:hi|hello|hey)\b[\s!.]*$",
            "answer": "Hello! How can I help you today?",
            "position": 20,
        },
    )
    if not RuntimeSettings.objects.exists():
        RuntimeSettings.objects.create(
            default_provider=simulated, default_model=SMALL, backup_provider=simulated, backup_model=LARGE
        )
