"""The one settings module. Everything comes from the environment through typed helpers that fail
loudly (agentops/env.py); defaults suit the project-local services `make run` starts."""

from __future__ import annotations

import datetime as dt
import os
import zoneinfo
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from agentops.env import env_bool, env_float, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_DIR = Path(env_str("AGENTOPS_RUN_DIR", str(BASE_DIR / ".run")))

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_secret("SECRET_KEY", required=not DEBUG) or "insecure-debug-only-key-" + "x" * 32
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Prometheus multiprocess mode: every process writes its samples to this directory and /metrics
# merges them. It must be in the environment before prometheus_client is first imported.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(RUN_DIR / "prometheus"))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",  # OpClass in index expressions (the queue search's trigram index)
    "channels",
    "django_htmx",
    "template_partials",
    "csp",
    "axes",
    "agentops",
    "review",
    "budgets",
    "agentops.demo",
]

MIDDLEWARE = [
    "agentops.observability.logging.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Turns a locked-out sign-in into the 429 page (agentops/accounts/login_throttle.py).
    "axes.middleware.AxesMiddleware",
    "agentops.lib.middleware.DatabaseUnavailableMiddleware",
]

# Machine endpoints (see MACHINE_PATH_PREFIXES) get a lean, async-native stack: measured in
# tests/bench/bench_http.py, the full browser stack costs ~2 thread hops per middleware under ASGI.
MACHINE_MIDDLEWARE = [
    "agentops.observability.logging.RequestLogMiddleware",
    "agentops.lib.middleware.MachineSecurityHeadersMiddleware",
]
MACHINE_PATH_PREFIXES = ("/healthz", "/readyz", "/metrics", "/api/v1/", "/v1/", "/_bench/", "/hooks/")

ROOT_URLCONF = "agentops.urls"
ASGI_APPLICATION = "agentops.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
                "agentops.accounts.roles.navigation",
            ],
            "builtins": ["agentops.lib.display_tags"],
        },
    }
]

DATABASE_URL = env_str("DATABASE_URL", "postgresql://agentops@127.0.0.1:54320/agentops")
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0), conn_health_checks=True
    )
}
DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int("DB_CONNECT_TIMEOUT", 5, minimum=1)
# Under ASGI Django runs each request's sync code in a thread of its own, so a thread-local persistent
# connection never survives the request: without a pool every API request pays a new PostgreSQL
# connection (~5 ms here). The web process therefore uses psycopg's pool (DB_POOL=1, set by the Procfile
# and the tests' web server). Celery workers keep persistent connections: a pool opened before the
# prefork would be shared across processes.
if env_bool("DB_POOL", False):
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps connections; Django refuses both
    # Django's pool check is an empty query per checkout (a round trip each gateway request pays); this backend
    # looks at the socket and queries only when the server spoke (agentops/lib/pgpool).
    DATABASES["default"]["ENGINE"] = "agentops.lib.pgpool"
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": env_int("DB_POOL_MIN", 2, minimum=0),
        "max_size": env_int("DB_POOL_MAX", 20, minimum=1),
        # Waiting for a pooled connection is bounded like opening one: a down database is reported (readyz,
        # fail-closed budgets) in seconds, not after a long queue.
        "timeout": env_float("DB_POOL_TIMEOUT", float(DATABASES["default"]["OPTIONS"]["connect_timeout"]), minimum=0.1),
    }
# Lets concurrent test sessions on one server keep their own test database.
if env_str("TEST_DB_NAME", ""):
    DATABASES["default"]["TEST"] = {"NAME": env_str("TEST_DB_NAME", "")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:63790/0")
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 2.0, minimum=0.1)
# How often a process asks Redis whether the admin-edited runtime settings changed (a version key): an edit
# reaches every process within this many seconds. 0 asks on every read (one Redis GET each).
RUNTIME_CONFIG_CHECK_SECONDS = env_float("RUNTIME_CONFIG_CHECK_SECONDS", 1.0, minimum=0.0)

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "agentops:django",
        "OPTIONS": {"socket_connect_timeout": REDIS_SOCKET_TIMEOUT, "socket_timeout": REDIS_SOCKET_TIMEOUT},
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # channels-redis blocks in BZPOPMIN for up to 5 s; redis-py's socket timeout must be longer,
            # or every idle socket dies with "Timeout reading" and pages reconnect every few seconds.
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
            "prefix": "agentops:channels",
            # Pages reconcile from the database on reconnect, so a short expiry loses nothing.
            "expiry": 30,
            "capacity": 1000,
            "group_expiry": 3600,
        },
    }
}

# --- Celery ------------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", REDIS_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One task at a time per process: runs are long and uneven, so prefetching more would park runs
# behind a slow one while another worker sits idle.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fix-up closes every database connection before and after EVERY task unless this is set,
# so each task (a run's execution among them) opened a new PostgreSQL connection (~25 % of a short run's
# time). Connections now live across tasks; agentops.celery replaces obsolete or broken ones before and
# after each task, as Django does per request (close_old_connections: CONN_MAX_AGE and health checks).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000, minimum=0)
# With acks_late an unacknowledged task is redelivered after the visibility timeout. Runs hold a lease
# with heartbeats (beat reclaims dead ones), so redelivery is only the last line of defence; it must be
# longer than the longest run (request timeout 300 s) so a slow but live run is never duplicated.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 900, minimum=60)}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BEAT_SCHEDULE: dict = {
    "reclaim-expired-runs": {"task": "agentops.reclaim_runs", "schedule": env_float("RECLAIM_EVERY", 5.0, minimum=0.5)},
    "expire-escalations": {"task": "review.expire_overdue", "schedule": env_float("EXPIRE_EVERY", 5.0, minimum=0.5)},
    "remind-escalations": {"task": "review.remind_due", "schedule": env_float("REMIND_EVERY", 10.0, minimum=0.5)},
    "reclaim-reservations": {
        "task": "budgets.reclaim_expired",
        "schedule": env_float("RECLAIM_RESERVATIONS_EVERY", 10.0, minimum=0.5),
    },
    "settle-parked-usage": {
        "task": "budgets.settle_parked",
        "schedule": env_float("SETTLE_PARKED_EVERY", 5.0, minimum=0.5),
    },
    "evaluate-alerts": {"task": "budgets.evaluate_alerts", "schedule": env_float("ALERTS_EVERY", 30.0, minimum=1.0)},
    "roll-up-usage": {"task": "budgets.roll_up_usage", "schedule": env_float("ROLLUP_EVERY", 10.0, minimum=1.0)},
    "purge-responses": {
        "task": "agentops.purge_responses",
        "schedule": env_float("PURGE_RESPONSES_EVERY", 3600.0, minimum=1.0),
    },
}
# Where people reach this deployment: links in e-mail and chat messages are absolute and start with it.
PUBLIC_URL = env_str("PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
# The reminder before a review deadline: at most this many seconds before it, in the deadline's last quarter.
REVIEW_REMINDER_SECONDS = env_float("REVIEW_REMINDER_SECONDS", 120.0, minimum=1.0)

# --- mail (approvals by e-mail: review/channels/email.py) ---------------------------------------------
# Django's SMTP backend. Without EMAIL_HOST no mail is sent and e-mail approvals are off (the reviewer's
# settings page says so); `make run` points it at the local sink the Procfile starts (.run/dev/mail/).
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL exclude each other; set one of them")
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0, minimum=1.0)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "agentops <agentops@localhost>")
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
REVIEW_EMAIL_ENABLED = bool(EMAIL_HOST)
# Approvals in chat (Slack-compatible; README "Approvals in chat"). Both are also editable in the admin (Review ›
# Chat settings); a value set here wins, so a secret can come from the deployment's secret store.
SLACK_WEBHOOK_URL = env_str("SLACK_WEBHOOK_URL", "")
SLACK_SIGNING_SECRET = env_str("SLACK_SIGNING_SECRET", "")
CELERY_WORKER_CONCURRENCY = env_int("CELERY_CONCURRENCY", 2, minimum=1)
# Policy suggestions from decision history (review/suggestions.py): how many human decisions an agent +
# operation needs, the share approved unchanged, and how many of the latest must all be plain approvals.
REVIEW_SUGGEST_MIN_DECISIONS = env_int("REVIEW_SUGGEST_MIN_DECISIONS", 20, minimum=1)
REVIEW_SUGGEST_APPROVAL_PERCENT = env_int("REVIEW_SUGGEST_APPROVAL_PERCENT", 98, minimum=50, maximum=100)
REVIEW_SUGGEST_RECENT = env_int("REVIEW_SUGGEST_RECENT", 10, minimum=1)

# --- auth, sessions, security ------------------------------------------------------------------
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Sign-in throttling (django-axes; agentops/accounts/login_throttle.py says what is ours and why): 10 failures in 15
# minutes per username, and per client address, lock it out for 15 minutes (429), shared by every web
# process through PostgreSQL.
AUTHENTICATION_BACKENDS = [
    "agentops.accounts.login_throttle.ThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "agentops.accounts.login_throttle.ThrottleHandler"
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env_float("LOGIN_LOCKOUT_MINUTES", 15.0, minimum=0.1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each counted on its own
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "agentops.accounts.login_throttle.client_address"
AXES_LOCKOUT_CALLABLE = "agentops.accounts.login_throttle.locked_out"
AXES_ENABLE_ACCESS_FAILURE_LOG = True  # one audit row per failed attempt, beside axes' per-client counters
AXES_VERBOSE = False  # our own structured line says what matters (auth.login_locked_out)
SECURE_HTTPS = env_bool("SECURE_HTTPS", False)
SESSION_COOKIE_SECURE = SECURE_HTTPS
CSRF_COOKIE_SECURE = SECURE_HTTPS
SECURE_SSL_REDIRECT = SECURE_HTTPS and env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0) if SECURE_HTTPS else 0
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_PROXY", False) else None
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Strict CSP: no inline script or style anywhere; htmx and page scripts are files under /static/.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# English and Simplified Chinese: the browser's Accept-Language picks one, the header's switch keeps a choice in a
# cookie (LocaleMiddleware). Catalogs in locale/ (`make messages` extracts; the launcher compiles them).
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = RUN_DIR / "staticfiles"
# uvicorn serves /static/ itself through Django's ASGI static handler unless a proxy does it.
SERVE_STATIC = env_bool("SERVE_STATIC", True)

# --- observability -----------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = env_str("LOG_FORMAT", "json")  # json | console
LOGGING_CONFIG = None  # structlog configures logging once, in agentops.observability.logging
METRICS_TOKEN = env_secret("METRICS_TOKEN", required=False, min_length=16)
# OpenTelemetry traces go out over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set, over the
# protocol OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL names (http/protobuf, the default, or
# grpc; anything else stops the start). The exporter reads the other OTEL_* variables itself.
from agentops.observability.tracing import configure_tracing, otlp_enabled, otlp_protocol  # noqa: E402

OTEL_ENABLED = otlp_enabled()
try:
    OTEL_PROTOCOL = otlp_protocol()
except ValueError as _exc:
    raise ImproperlyConfigured(str(_exc)) from _exc

# --- agentops ----------------------------------------------------------------------------------
# Agent functions are registered by importing their modules (agentops/runs/registry.py): the built-in demo
# agents first, then the modules a deployment names in AGENTOPS_AGENT_MODULES (comma-separated import paths).
AGENTOPS_BUILTIN_AGENT_MODULES = ("agentops.demo.agents.support_refund", "agentops.demo.agents.research")
AGENTOPS_AGENT_MODULES = env_list("AGENTOPS_AGENT_MODULES", [])
AGENTOPS_BENCH_ENDPOINTS = env_bool("AGENTOPS_BENCH_ENDPOINTS", False)
# The demo traffic (manage.py simulate_traffic, make run's `traffic`) paces each of its agents to this many
# tokens a minute after an hour's worth at the start (0 = unpaced): 3 agents × 12 × (60 + 1440) min = 54,000
# tokens a day, about half of the seeded 100,000-token global daily budget and under its 80 % alert
# threshold (seed_demo also caps each demo agent at DEMO_AGENT_DAILY_TOKENS a day with a hard budget).
DEMO_TOKENS_PER_MINUTE = env_float("DEMO_TOKENS_PER_MINUTE", 12.0, minimum=0.0)
# Webhooks and provider base URLs may only reach public addresses (agentops/lib/netguard.py): loopback,
# link-local, private and unspecified ones are refused unless listed here (comma-separated host names, IP
# addresses or CIDR networks). `make run` lists loopback for the demo's local mock; production lists nothing.
AGENTOPS_ALLOW_PRIVATE_URLS = env_list("AGENTOPS_ALLOW_PRIVATE_URLS", [])
try:
    from agentops.lib.netguard import AllowList

    AllowList.parse(AGENTOPS_ALLOW_PRIVATE_URLS)
except ValueError as _exc:
    raise ImproperlyConfigured(f"AGENTOPS_ALLOW_PRIVATE_URLS: {_exc}") from _exc
READYZ_TIMEOUT = env_float("READYZ_TIMEOUT", 2.0, minimum=0.1)
# A worker holds a run's lease and renews it every RUN_LEASE_SECONDS / 3; beat re-enqueues runs whose
# lease expired (the worker died), so a crashed run resumes after at most lease + reclaim interval.
RUN_LEASE_SECONDS = env_float("RUN_LEASE_SECONDS", 30.0, minimum=1.0)
# A queued run whose execute_run message was lost (the broker was down when it was enqueued, a killed worker
# had prefetched it, its task failed before claiming it) is enqueued again by beat once it has sat queued
# this long. A duplicate message is harmless: the claim lets one execution through.
RUN_REQUEUE_SECONDS = env_float("RUN_REQUEUE_SECONDS", 60.0, minimum=1.0)

from agentops.observability.logging import configure_logging  # noqa: E402  (needs LOG_* above)

configure_logging(level=LOG_LEVEL, fmt=LOG_FORMAT)

configure_tracing(export=OTEL_ENABLED, protocol=OTEL_PROTOCOL)

# --- budgets (DESIGN.md §7) ---------------------------------------------------------------------------
# A reservation not settled within its lease is given back by beat (the caller died).
BUDGET_RESERVATION_LEASE_SECONDS = env_float("BUDGET_RESERVATION_LEASE_SECONDS", 300.0, minimum=1.0)
# The time zone new day budgets count in (each budget keeps its own).
# A settle that finds PostgreSQL away is tried again for this long, then parked in Redis for beat to apply
# (budgets.settle_parked): the call was answered and paid for, so its usage must reach the ledger.
BUDGET_SETTLE_PATIENCE_SECONDS = env_float("BUDGET_SETTLE_PATIENCE_SECONDS", 20.0, minimum=0.0)
BUDGET_TIMEZONE = env_str("BUDGET_TIMEZONE", "UTC")
try:
    zoneinfo.ZoneInfo(BUDGET_TIMEZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError) as _exc:
    raise ImproperlyConfigured(f"BUDGET_TIMEZONE={BUDGET_TIMEZONE!r} is not a time zone name") from _exc
# Usage an agent reports itself (POST /api/v1/usage, a settle) is refused with a 422 beyond what one call of
# the model can use: its context window of input and its output limit (below: model family -> (context,
# output) tokens; "gpt-4o" also covers "gpt-4o-2024-08-06" and "openai/gpt-4o"), else this ceiling in total.
AGENTOPS_USAGE_REPORT_MAX_TOKENS = env_int("AGENTOPS_USAGE_REPORT_MAX_TOKENS", 2_000_000, minimum=1, maximum=2**31 - 1)
AGENTOPS_MODEL_TOKEN_LIMITS = {
    "gpt-4o": (128_000, 16_384),
    "gpt-4o-mini": (128_000, 16_384),
    "gpt-4.1": (1_047_576, 32_768),
    "gpt-4-turbo": (128_000, 4_096),
    "gpt-4": (8_192, 8_192),
    "gpt-3.5-turbo": (16_385, 4_096),
    "o1": (200_000, 100_000),
    "o3": (200_000, 100_000),
    "o4-mini": (200_000, 100_000),
    "claude-3": (200_000, 4_096),
    "claude-3-5-sonnet": (200_000, 8_192),
    "claude-3-5-haiku": (200_000, 8_192),
    "claude-3-7-sonnet": (200_000, 64_000),
    "claude-sonnet-4": (200_000, 64_000),
    "claude-opus-4": (200_000, 32_000),
}
WEBHOOK_RETRY_BASE_SECONDS = env_float("WEBHOOK_RETRY_BASE_SECONDS", 2.0, minimum=0.01)
WEBHOOK_MAX_RETRIES = env_int("WEBHOOK_MAX_RETRIES", 5, minimum=0)  # after the first attempt: 2, 4, 8, 16, 32 s

# --- agent REST API (DESIGN.md §8) -------------------------------------------------------------------
API_RATE_PER_SECOND = env_float("API_RATE_PER_SECOND", 50.0, minimum=0.01)  # per key, token bucket
API_RATE_BURST = env_int("API_RATE_BURST", 200, minimum=1)
# Bodies over this answer 413 on every path, before they are read (agentops/lib/bodylimit.py wraps the whole ASGI
# application; Django's own check comes after its handler has read the body whole).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_BODY_BYTES", 1_048_576, minimum=1024)
# Django's ASGI handler spools a body to a temporary file past this size: never, for a body the limit admits.
FILE_UPLOAD_MAX_MEMORY_SIZE = max(2_621_440, DATA_UPLOAD_MAX_MEMORY_SIZE)
# Longest ?wait= a long-poll may ask for (seconds).
API_MAX_WAIT_SECONDS = env_float("API_MAX_WAIT_SECONDS", 60.0, minimum=1.0)
# How long a process remembers a verified API key (revocation takes effect everywhere within this).
API_KEY_CACHE_SECONDS = env_float("API_KEY_CACHE_SECONDS", 5.0, minimum=0.0)
# How long a process remembers a key found bad, to refuse it again without a thread or a database read.
API_KEY_NEGATIVE_CACHE_SECONDS = env_float("API_KEY_NEGATIVE_CACHE_SECONDS", 5.0, minimum=0.0)

# --- OpenAI-compatible gateway at /v1 (DESIGN.md §8b) --------------------------------------------------
# The standard OpenAI variables name the default upstream: the endpoint for any model no route or provider
# names (unset: such a model answers 404, and the routed models are answered by the configured providers).
GATEWAY_UPSTREAM_URL = env_str("OPENAI_BASE_URL", "")
GATEWAY_UPSTREAM_KEY = env_str("OPENAI_API_KEY", "")
# Output tokens a request that names no max_tokens may use: it is sent upstream as the cap and reserved
# against budgets, so the reservation always covers the actual spend.
GATEWAY_DEFAULT_MAX_TOKENS = env_int("GATEWAY_DEFAULT_MAX_TOKENS", 4096, minimum=1)
# Threads that run guarded calls for the event loop (each in-flight request or stream holds one).
GATEWAY_THREADS = env_int("GATEWAY_THREADS", 64, minimum=1)
# How long a held answer (a sensitive tool call, agent setting "hold") waits for a reviewer before the
# safe default (reject) applies.
GATEWAY_HOLD_SECONDS = env_float("GATEWAY_HOLD_SECONDS", 300.0, minimum=1.0)
# How long /v1/responses answers stay retrievable (GET /v1/responses/{id}, previous_response_id); beat deletes
# older ones (agentops.purge_responses).
AGENTOPS_RESPONSES_RETENTION_DAYS = env_float("AGENTOPS_RESPONSES_RETENTION_DAYS", 30.0, minimum=0.001)
# A gateway request's in-flight slot (ApiKey.max_in_flight) lapses after this even if its process died
# before releasing it; a request that lasts longer stops counting against its key from then on.
GATEWAY_IN_FLIGHT_TTL_SECONDS = env_float("GATEWAY_IN_FLIGHT_TTL_SECONDS", 900.0, minimum=10.0)
