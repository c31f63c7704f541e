"""What `make run`, `make test` and `make bench` do once the virtualenv exists (stdlib only).

python -m agentops.devtools.launch run [--workers N]
python -m agentops.devtools.launch test [pytest args...]
python -m agentops.devtools.launch bench [bench args...]
python -m agentops.devtools.launch manage <manage.py command and arguments>
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from agentops.devtools import services
from agentops.devtools.services import ROOT, RUN, ServiceError

PY = sys.executable


def step(message: str) -> None:
    print(f"agentops: {message}", flush=True)


def manage(env: dict, *args: str, log: Path, what: str) -> None:
    """Run a manage.py command, its output in `log`; on failure stop with one line and the log's tail."""
    with log.open("a") as out:
        result = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise ServiceError(f"{what} failed: {tail[0][:300]} (full log: {log})")


def secret_key(profile_home: Path) -> str:
    """A stable random SECRET_KEY per profile, so sessions survive restarts."""
    path = profile_home / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


def base_env(profile_name: str, service_env: dict) -> dict:
    prof = services.profile(profile_name)
    prom = prof.home / "prometheus"
    shutil.rmtree(prom, ignore_errors=True)  # multiprocess files of dead processes would linger
    prom.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        **service_env,
        "DJANGO_SETTINGS_MODULE": "agentops.settings",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secret_key(prof.home),
        "PROMETHEUS_MULTIPROC_DIR": str(prom),
        "AGENTOPS_RUN_DIR": str(RUN),
        "PYTHONUNBUFFERED": "1",
        # Outbound requests may reach loopback here only: the demo's OpenAI mock (make run, make bench) and the
        # tests' webhook receivers and mocks listen on 127.0.0.1. Production leaves it unset (README, "Outbound
        # requests"); a value set in the environment, even an empty one, wins.
        "AGENTOPS_ALLOW_PRIVATE_URLS": os.environ.get("AGENTOPS_ALLOW_PRIVATE_URLS", "127.0.0.0/8,::1"),
        # Procfile commands (python, celery) must come from the project's virtualenv.
        "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def wait_redis_ready(env: dict) -> None:
    url = urllib.parse.urlparse(env["REDIS_URL"])
    if not services.port_open(url.port or 6379) and url.hostname in {"127.0.0.1", "localhost"}:
        raise ServiceError(f"Redis at {env['REDIS_URL']} is not answering; start it or unset REDIS_URL")


def run(argv: list[str]) -> int:
    port = int(os.environ.get("PORT", "8000"))
    workers = int(os.environ.get("WORKERS", "1"))
    if services.port_open(port):
        raise ServiceError(f"port {port} is already in use; stop what holds it or run `make run PORT=8001`")
    started = time.monotonic()
    step("starting PostgreSQL and Redis under .run/dev ...")
    env = base_env("dev", services.up("dev"))
    env["PORT"] = str(port)
    env["WEB_PORT"] = str(port)  # honcho gives each Procfile process its own PORT; the traffic needs the web's
    wait_redis_ready(env)
    logs = services.profile("dev").home / "logs"
    step("migrating ...")
    manage(env, "migrate", "--noinput", log=logs / "migrate.log", what="migration")
    mock_port = int(os.environ.get("MOCK_OPENAI_PORT", "8011"))
    if services.port_open(mock_port):
        raise ServiceError(f"port {mock_port} (the demo's OpenAI mock) is in use; set MOCK_OPENAI_PORT to a free port")
    env["MOCK_OPENAI_PORT"] = str(mock_port)
    if not os.environ.get("EMAIL_HOST"):  # the demo's mail goes to the Procfile's local sink, a Maildir
        mail_port = int(os.environ.get("MAIL_PORT", "8025"))
        if services.port_open(mail_port):
            raise ServiceError(f"port {mail_port} (the demo's mail sink) is in use; set MAIL_PORT to a free port")
        env.update(EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(mail_port), MAIL_PORT=str(mail_port))
        env.setdefault("PUBLIC_URL", f"http://127.0.0.1:{port}")
    manage(
        env,
        "seed_demo",
        "--quiet",
        f"--mock-url=http://127.0.0.1:{mock_port}/v1",
        log=logs / "seed.log",
        what="seeding demo data",
    )
    creds = (RUN / "demo-credentials.txt").read_text()
    print("\nDemo logins (role username password), kept in .run/demo-credentials.txt:")
    for line in creds.splitlines():
        print("   ", line)
    print(f"\n  agentops is starting on http://127.0.0.1:{port}/  (health: /healthz, /readyz; metrics: /metrics)")
    print(
        "  Logs: JSON lines in this terminal (keep them with `make run | tee run.log`); "
        f"PostgreSQL, Redis, migrate and seed logs in {logs}/"
    )
    if env.get("MAIL_PORT"):
        print(f"  Mail (approvals by e-mail) lands in {RUN / 'dev' / 'mail'}/new/, one file per message.")
    print(f"  Ctrl-C stops everything. Set up in {time.monotonic() - started:.1f} s.\n", flush=True)
    procfile_env = {**env, "CELERY_WORKERS": str(workers)}
    concurrency = [f"worker={workers}"] if workers > 1 else []
    cmd = [str(Path(PY).parent / "honcho"), "start", "-f", "Procfile", "-p", str(port), "--no-prefix", "--no-colour"]
    if concurrency:
        cmd += ["-c", ",".join(concurrency)]
    if os.environ.get("DEMO_TRAFFIC", "1") == "0":  # the Procfile's other processes, without the demo traffic
        cmd += ["web", "worker", "beat", "mock", "mail"]
    # honcho writes straight to this terminal (a pipe through us would wedge it if we died first).
    proc = subprocess.Popen(cmd, cwd=ROOT, env=procfile_env)
    signal.signal(signal.SIGINT, lambda *_: None)  # honcho (same process group) handles Ctrl-C
    for sig in (signal.SIGTERM, signal.SIGHUP):  # a `kill` of this launcher stops everything too
        signal.signal(sig, lambda *_: proc.terminate())
    try:
        code = proc.wait()
    finally:
        step("stopping PostgreSQL and Redis ...")
        services.down("dev")
    return code


def ensure_chromium() -> None:
    if shutil.which("chromium") or Path("/usr/bin/chromium").exists():
        return
    if os.geteuid() != 0:
        raise ServiceError("Chromium is missing: install it with `sudo apt-get install -y chromium`")
    step("installing Chromium with apt-get (browser tests) ...")
    log = RUN / "apt-get.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("a") as out:
        ok = subprocess.run(["apt-get", "update"], stdout=out, stderr=out, env=env).returncode == 0
        ok = (
            ok
            and subprocess.run(["apt-get", "install", "-y", "chromium"], stdout=out, stderr=out, env=env).returncode
            == 0
        )
    if not ok:
        raise ServiceError(f"apt-get could not install chromium; see {log}")


def lint() -> None:
    ruff = str(Path(PY).parent / "ruff")
    step("ruff check + format check ...")
    for cmd in ([ruff, "check", "."], [ruff, "format", "--check", "."]):
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            raise ServiceError(
                f"`{' '.join(cmd[1:])}` failed; run `.venv/bin/ruff check --fix . && .venv/bin/ruff format .`"
            )
    step("import contracts (rooms, one-way doors, no circles) ...")
    if subprocess.run([str(Path(PY).parent / "lint-imports"), "--no-cache"], cwd=ROOT).returncode != 0:
        raise ServiceError("an import breaks the house's contracts ([tool.importlinter] in pyproject.toml); see above")


def test(argv: list[str]) -> int:
    lint()
    ensure_chromium()
    step("starting test PostgreSQL and Redis under .run/test ...")
    env = base_env("test", services.up("test"))
    env["AGENTOPS_TEST_PROFILE"] = "test"
    try:
        return subprocess.run([PY, "-m", "pytest", *argv], cwd=ROOT, env=env).returncode
    finally:
        services.down("test")


def bench(argv: list[str]) -> int:
    step("starting PostgreSQL and Redis under .run/test for benchmarks ...")
    env = base_env("test", services.up("test"))
    env["AGENTOPS_BENCH_ENDPOINTS"] = "1"
    try:
        return subprocess.run([PY, "-m", "tests.bench", *argv], cwd=ROOT, env=env).returncode
    finally:
        services.down("test")


def manage_command(argv: list[str]) -> int:
    """`make manage ARGS="create_api_key my-agent"`: a manage.py command against `make run`'s PostgreSQL and
    Redis (started for the command, and stopped after it, when `make run` is not up)."""
    prof = services.profile("dev")
    was_up = services.port_open(prof.pg_port) and services.port_open(prof.redis_port)
    env = {
        **os.environ,
        **services.up("dev"),
        "DJANGO_SETTINGS_MODULE": "agentops.settings",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secret_key(prof.home),
        "PROMETHEUS_MULTIPROC_DIR": str(prof.home / "prometheus"),  # shared with make run's processes
        "AGENTOPS_RUN_DIR": str(RUN),
        # as make run's processes (base_env): seed_demo points providers at the mock on loopback
        "AGENTOPS_ALLOW_PRIVATE_URLS": os.environ.get("AGENTOPS_ALLOW_PRIVATE_URLS", "127.0.0.0/8,::1"),
    }
    (prof.home / "prometheus").mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.call([PY, "manage.py", *argv], cwd=ROOT, env=env)
    finally:
        if not was_up:
            services.down("dev")


def compile_translations() -> None:
    """The translation catalogs (locale/*.po) compiled for Django, where a .po changed (devtools.messages)."""
    from agentops.devtools import messages  # noqa: PLC0415 -- polib is in the virtualenv, not in the stdlib launcher

    if compiled := messages.compile_all():
        step(f"compiled {len(compiled)} translation catalog(s)")


def main() -> int:
    commands = {"run": run, "test": test, "bench": bench, "manage": manage_command}
    if len(sys.argv) >= 2 and sys.argv[1] in commands:
        compile_translations()
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
